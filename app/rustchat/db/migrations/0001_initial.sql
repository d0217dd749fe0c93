-- Accounts, teams, channels, posts, reactions, server configuration.
-- Times are unix milliseconds (bigint) as the API exposes them; ids are 26-char lowercase hex.

CREATE TABLE users (
    id            text PRIMARY KEY,
    username      text NOT NULL,
    email         text NOT NULL,
    password_hash text NOT NULL,
    is_admin      boolean NOT NULL DEFAULT false,
    create_at     bigint NOT NULL,
    update_at     bigint NOT NULL,
    delete_at     bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Bearer tokens are stored as SHA-256 digests: a database dump does not hand out live sessions.
CREATE TABLE sessions (
    token_hash       text PRIMARY KEY,
    user_id          text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    create_at        bigint NOT NULL,
    expires_at       bigint NOT NULL,
    last_activity_at bigint NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

-- Failed-login counters live in the database so the limit holds across every worker and node,
-- with or without Redis.
CREATE TABLE login_failures (
    scope        text NOT NULL,   -- 'account' or 'address'
    key          text NOT NULL,
    window_start bigint NOT NULL,
    failures     integer NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE teams (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    display_name text NOT NULL,
    creator_id   text REFERENCES users (id) ON DELETE SET NULL,
    create_at    bigint NOT NULL,
    update_at    bigint NOT NULL,
    delete_at    bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX teams_name_key ON teams (lower(name));

CREATE TABLE team_members (
    team_id   text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id   text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    is_admin  boolean NOT NULL DEFAULT false,
    create_at bigint NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user_idx ON team_members (user_id);

CREATE TABLE channels (
    id           text PRIMARY KEY,
    team_id      text REFERENCES teams (id) ON DELETE CASCADE,  -- NULL for direct messages
    name         text NOT NULL,
    display_name text NOT NULL,
    type         text NOT NULL CHECK (type IN ('public', 'private', 'direct')),
    creator_id   text REFERENCES users (id) ON DELETE SET NULL,
    create_at    bigint NOT NULL,
    update_at    bigint NOT NULL,
    delete_at    bigint NOT NULL DEFAULT 0,
    last_post_at bigint NOT NULL DEFAULT 0,
    CHECK ((type = 'direct') = (team_id IS NULL))
);
CREATE UNIQUE INDEX channels_team_name_key ON channels (team_id, lower(name)) WHERE team_id IS NOT NULL;
CREATE UNIQUE INDEX channels_direct_name_key ON channels (name) WHERE type = 'direct';

CREATE TABLE channel_members (
    channel_id     text NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id        text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    is_admin       boolean NOT NULL DEFAULT false,
    create_at      bigint NOT NULL,
    last_viewed_at bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX channel_members_user_idx ON channel_members (user_id);

CREATE TABLE posts (
    id         text PRIMARY KEY,
    channel_id text NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id    text NOT NULL REFERENCES users (id),
    root_id    text REFERENCES posts (id),
    message    text NOT NULL,
    create_at  bigint NOT NULL,
    update_at  bigint NOT NULL,
    edit_at    bigint NOT NULL DEFAULT 0,
    delete_at  bigint NOT NULL DEFAULT 0
);
CREATE INDEX posts_channel_create_idx ON posts (channel_id, create_at DESC, id DESC);
CREATE INDEX posts_channel_update_idx ON posts (channel_id, update_at);
CREATE INDEX posts_root_idx ON posts (root_id) WHERE root_id IS NOT NULL;

CREATE TABLE reactions (
    post_id    text NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji_name text NOT NULL,
    create_at  bigint NOT NULL,
    PRIMARY KEY (post_id, user_id, emoji_name)
);

CREATE TABLE server_config (
    id        text PRIMARY KEY,
    site      jsonb NOT NULL,
    update_at bigint NOT NULL DEFAULT 0
);
INSERT INTO server_config (id, site) VALUES ('default', '{"max_simultaneous_connections": 5}');
