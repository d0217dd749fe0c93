-- Uploaded files. The bytes are a PostgreSQL large object (lo_oid), so every node serves every file;
-- this table holds what the upload said and what it was found to be.
CREATE TABLE files (
    id            text PRIMARY KEY,
    channel_id    text NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id       text NOT NULL REFERENCES users (id),
    post_id       text REFERENCES posts (id) ON DELETE SET NULL,  -- NULL until attached to a post
    name          text NOT NULL,
    declared_type text NOT NULL,   -- the uploader's Content-Type
    detected_type text NOT NULL,   -- from the file's first bytes
    size          bigint NOT NULL,
    lo_oid        oid NOT NULL,
    create_at     bigint NOT NULL
);
CREATE INDEX files_channel_idx ON files (channel_id, create_at);
CREATE INDEX files_post_idx ON files (post_id) WHERE post_id IS NOT NULL;
CREATE INDEX files_unattached_idx ON files (create_at) WHERE post_id IS NULL;

-- A file's bytes go with its row, however the row goes (a channel deleted cascades here).
CREATE FUNCTION files_unlink_large_object() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_largeobject_metadata WHERE oid = OLD.lo_oid) THEN
        PERFORM lo_unlink(OLD.lo_oid);
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER files_unlink_large_object AFTER DELETE ON files
    FOR EACH ROW EXECUTE FUNCTION files_unlink_large_object();

-- The files of a post, in the order they were attached, served with the post.
ALTER TABLE posts ADD COLUMN file_ids text[] NOT NULL DEFAULT '{}';
