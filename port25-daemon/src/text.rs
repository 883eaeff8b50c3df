//! Text for operators: untrusted text quoted in a message (a list file's line, a LAPI's answer)
//! cut to a readable length, so that a hostile or broken input can make neither the log nor an
//! error huge; and counts with their noun ("1 entry", "2 entries").

/// `count` and its noun, singular or plural: `counted(1, "entry", "entries")` is "1 entry".
pub(crate) fn counted(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// `text`, or its first `max` characters and how many bytes were left out.
pub(crate) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}… ({} more bytes)", &text[..end], text.len() - end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_has_its_noun() {
        assert_eq!(counted(1, "entry", "entries"), "1 entry");
        assert_eq!(counted(0, "entry", "entries"), "0 entries");
    }

    #[test]
    fn short_text_stays_and_long_text_says_what_was_cut() {
        assert_eq!(cut("198.18.0.1", 64), "198.18.0.1");
        assert_eq!(cut("abcdef", 3), "abc… (3 more bytes)");
        // Never inside a character.
        assert_eq!(cut("ééé", 1), "é… (4 more bytes)");
    }
}
