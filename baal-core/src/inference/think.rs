//! Reasoning kept out of answers. Thinking models either send their reasoning in separate
//! `reasoning` / `reasoning_content` fields (parsed as [`super::Delta::Reasoning`]) or inline in
//! the content as `<think>…</think>`. [`ThinkFilter`] removes the inline shape from streamed
//! content, tags split across chunks included, so reasoning is never shown, streamed or stored.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Splits streamed content into what may be shown and reasoning, chunk by chunk.
#[derive(Debug, Default)]
pub(crate) struct ThinkFilter {
    inside: bool,
    /// The end of the last chunk when it may be the start of a tag: held until the next chunk
    /// says whether it is one.
    held: String,
    /// Right after `</think>` the model usually writes blank lines before the answer.
    trim_start: bool,
}

/// What one chunk of content added.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Filtered {
    /// Text that may be shown.
    pub(crate) visible: String,
    /// Whether this chunk (or a tag it completed) was reasoning.
    pub(crate) reasoning: bool,
}

impl ThinkFilter {
    /// Feeds one chunk of content.
    pub(crate) fn push(&mut self, chunk: &str) -> Filtered {
        let mut text = std::mem::take(&mut self.held);
        text.push_str(chunk);
        let mut out = Filtered::default();
        let mut rest = text.as_str();
        loop {
            let tag = if self.inside { CLOSE } else { OPEN };
            match rest.find(tag) {
                Some(at) => {
                    self.emit(&rest[..at], &mut out);
                    rest = &rest[at + tag.len()..];
                    out.reasoning = true;
                    self.inside = !self.inside;
                    self.trim_start = !self.inside;
                }
                None => {
                    // Hold back a tail that could be the start of the tag.
                    let keep = partial_suffix(rest, tag);
                    let (now, later) = rest.split_at(rest.len() - keep);
                    self.emit(now, &mut out);
                    self.held = later.to_owned();
                    break;
                }
            }
        }
        out
    }

    /// Ends the content: a held tail that never became a tag is text after all; reasoning that
    /// was never closed stays hidden.
    pub(crate) fn finish(&mut self) -> Filtered {
        let held = std::mem::take(&mut self.held);
        let mut out = Filtered::default();
        self.emit(&held, &mut out);
        out
    }

    fn emit(&mut self, text: &str, out: &mut Filtered) {
        if self.inside {
            if !text.is_empty() {
                out.reasoning = true;
            }
            return;
        }
        let text = if self.trim_start { text.trim_start() } else { text };
        if !text.is_empty() {
            self.trim_start = false;
            out.visible.push_str(text);
        }
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `tag`.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && text.ends_with(&tag[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str]) -> (String, bool) {
        let mut filter = ThinkFilter::default();
        let mut shown = String::new();
        let mut reasoning = false;
        for chunk in chunks {
            let out = filter.push(chunk);
            shown.push_str(&out.visible);
            reasoning |= out.reasoning;
        }
        shown.push_str(&filter.finish().visible);
        (shown, reasoning)
    }

    #[test]
    fn inline_reasoning_is_removed_whatever_the_chunking() {
        let whole = "<think>SECRET-REASONING about <b>tags</b></think>\n\nFinal answer.";
        // Every way of cutting the text in two, and one char at a time.
        for cut in (0..=whole.len()).filter(|&i| whole.is_char_boundary(i)) {
            let (shown, reasoning) = run(&[&whole[..cut], &whole[cut..]]);
            assert_eq!(shown, "Final answer.", "cut at {cut}");
            assert!(reasoning);
        }
        let chars: Vec<String> = whole.chars().map(String::from).collect();
        let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(run(&chars), ("Final answer.".to_owned(), true));
    }

    #[test]
    fn text_without_tags_passes_unchanged() {
        for text in ["Plain answer.", "a < b and <thin ice>", "ends with <thi", "emoji 🎉 <", "x</think"] {
            let (shown, reasoning) = run(&[text]);
            assert_eq!(shown, text);
            assert!(!reasoning);
        }
    }

    #[test]
    fn unclosed_reasoning_stays_hidden() {
        assert_eq!(run(&["<think>still ", "thinking"]), (String::new(), true));
    }

    #[test]
    fn a_held_tail_is_released_when_it_is_not_a_tag() {
        let mut filter = ThinkFilter::default();
        assert_eq!(filter.push("1 <").visible, "1 ");
        assert_eq!(filter.push(" 2").visible, "< 2");
    }
}
