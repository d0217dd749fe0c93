// Reaction names (what the API stores, [a-z0-9_+-]) and the characters shown for them. A name
// not listed here is shown as :name:.

export const EMOJI = {
  "+1": "👍", thumbsup: "👍", "-1": "👎", thumbsdown: "👎", heart: "❤️", smile: "😄", joy: "😂",
  tada: "🎉", eyes: "👀", rocket: "🚀", white_check_mark: "✅", pray: "🙏", fire: "🔥", thinking: "🤔",
};

// The picker offers these.
export const PICKER = ["+1", "heart", "smile", "tada", "eyes", "rocket", "white_check_mark", "thinking"];

export function emojiChar(name) {
  return EMOJI[name] || `:${name}:`;
}
