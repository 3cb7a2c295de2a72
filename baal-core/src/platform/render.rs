//! Rendering for chat front-ends: agent markdown into Telegram's HTML subset, escaping, and
//! splitting long HTML into messages that fit Telegram's limit.
//!
//! Telegram counts its limits in UTF-16 code units (an emoji outside the BMP counts twice), so
//! every length here is [`utf16_len`]. The HTML subset is the one Telegram parses:
//! `b i u s code pre a blockquote` (and `<code class="language-x">` inside `<pre>`).

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag};

/// Telegram's limit for one text message, in UTF-16 code units.
pub const TELEGRAM_TEXT_LIMIT: usize = 4096;

/// Length of `text` as Telegram counts it: UTF-16 code units.
pub fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// Escapes `text` for Telegram HTML (`&`, `<`, `>` and `"`), so user-supplied names, prompts and
/// agent output show literally and never break the surrounding markup.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    push_escaped(&mut out, text);
    out
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
}

/// Turns an agent's CommonMark into Telegram HTML: bold, italic, strikethrough, code spans, fenced
/// code (with its language), links, headings as bold lines, lists as bullets or numbers, and
/// blockquotes. Raw HTML in the markdown is shown as text. Whatever cannot be rendered safely
/// comes out as escaped plain text, so the result always parses in Telegram.
///
/// Any prefix of an answer renders too (a streamed answer is shown while it is written): an
/// unclosed fence is a code block up to the end, an unclosed `**` shows as written.
pub fn markdown_to_html(markdown: &str) -> String {
    let html = write_html(markdown);
    // The writer only emits tags in pairs; this guards against a parser surprise ever reaching
    // Telegram as markup it rejects (which would lose the whole answer).
    if tags_are_balanced(&html) { html } else { escape_html(markdown) }
}

/// The writer's HTML for `markdown`, before the balance guard.
fn write_html(markdown: &str) -> String {
    let options = Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut writer = HtmlWriter::default();
    for event in Parser::new_ext(markdown, options) {
        writer.event(event);
    }
    writer.out
}

/// What an `End` event must write, pushed at the matching `Start`.
#[derive(Debug)]
enum Closer {
    /// Nothing was opened (a nested bold, a paragraph, a link we could not render).
    Nothing,
    /// Inline tags to write, innermost first.
    Inline(&'static str),
    /// A block tag: write it and separate what follows by a blank line.
    Block(&'static str),
    /// A heading: close the bold and separate.
    Heading,
    /// A block with no tag (paragraph, HTML block): separate what follows.
    Separate,
    /// A fenced or indented code block: the buffered code is written at the end.
    Code(&'static str),
    /// A list.
    List,
    /// A list item.
    Item,
    /// An inline tag that is only counted (so nesting it does not duplicate the tag).
    Counted(&'static str, &'static str),
}

#[derive(Default)]
struct HtmlWriter {
    out: String,
    closers: Vec<Closer>,
    /// Newlines owed before the next visible content; dropped at the end, so output never ends
    /// with blank lines and a container tag never starts with them.
    pending_newlines: usize,
    /// True right after a container opened or at the start: no separation is owed yet.
    fresh: bool,
    started: bool,
    /// Open depth per inline tag, so `**bold in a # heading**` does not nest `<b>` twice.
    bold: usize,
    italic: usize,
    strike: usize,
    link: usize,
    blockquote: usize,
    /// Counters of the open lists (`None` for bullets).
    lists: Vec<Option<u64>>,
    /// Text of the code block being read.
    code: Option<String>,
}

impl HtmlWriter {
    fn separate(&mut self, newlines: usize) {
        if self.started && !self.fresh {
            self.pending_newlines = self.pending_newlines.max(newlines);
        }
    }

    fn flush(&mut self) {
        for _ in 0..self.pending_newlines {
            self.out.push('\n');
        }
        self.pending_newlines = 0;
    }

    fn text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Some(code) = self.code.as_mut() {
            code.push_str(text);
            return;
        }
        self.flush();
        push_escaped(&mut self.out, text);
        self.fresh = false;
        self.started = true;
    }

    fn open(&mut self, tag: &str, container: bool) {
        self.flush();
        self.out.push_str(tag);
        self.started = true;
        if container {
            self.fresh = true;
        }
    }

    fn counted(&mut self, tag: &'static str, close: &'static str, depth: fn(&mut Self) -> &mut usize) -> Closer {
        *depth(self) += 1;
        if *depth(self) == 1 {
            self.open(tag, false);
            Closer::Counted(close, tag)
        } else {
            Closer::Counted("", tag)
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        let closer = match tag {
            Tag::Paragraph | Tag::HtmlBlock => {
                self.separate(2);
                Closer::Separate
            }
            Tag::Heading { .. } => {
                self.separate(2);
                self.bold += 1;
                if self.bold == 1 {
                    self.open("<b>", false);
                }
                Closer::Heading
            }
            Tag::BlockQuote(_) => {
                self.separate(2);
                self.blockquote += 1;
                // Telegram refuses nested blockquotes; the inner ones just continue the outer.
                if self.blockquote == 1 {
                    self.open("<blockquote>", true);
                    Closer::Block("</blockquote>")
                } else {
                    Closer::Nothing
                }
            }
            Tag::CodeBlock(kind) => {
                self.separate(2);
                let language = match &kind {
                    CodeBlockKind::Fenced(info) => safe_language(info),
                    CodeBlockKind::Indented => None,
                };
                match language {
                    Some(language) => {
                        self.open(&format!("<pre><code class=\"language-{language}\">"), true);
                        self.code = Some(String::new());
                        Closer::Code("</code></pre>")
                    }
                    None => {
                        self.open("<pre>", true);
                        self.code = Some(String::new());
                        Closer::Code("</pre>")
                    }
                }
            }
            Tag::List(first) => {
                self.separate(if self.lists.is_empty() { 2 } else { 1 });
                self.lists.push(first);
                Closer::List
            }
            Tag::Item => {
                self.separate(1);
                let depth = self.lists.len().saturating_sub(1);
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let marker = format!("{n}. ");
                        *n += 1;
                        marker
                    }
                    _ => "• ".to_owned(),
                };
                self.text(&format!("{}{marker}", "    ".repeat(depth)));
                self.fresh = true;
                Closer::Item
            }
            Tag::Emphasis => self.counted("<i>", "</i>", |w| &mut w.italic),
            Tag::Strong => self.counted("<b>", "</b>", |w| &mut w.bold),
            Tag::Strikethrough => self.counted("<s>", "</s>", |w| &mut w.strike),
            Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                if self.link == 0 && self.code.is_none() && is_safe_url(&dest_url) {
                    self.link += 1;
                    let mut tag = String::from("<a href=\"");
                    push_escaped(&mut tag, &dest_url);
                    tag.push_str("\">");
                    self.open(&tag, false);
                    Closer::Inline("</a>")
                } else {
                    Closer::Nothing
                }
            }
            // Tables, footnotes, definition lists, metadata and anything newer: their text is
            // still shown, without markup Telegram has no equivalent for.
            _ => {
                self.separate(1);
                Closer::Separate
            }
        };
        self.closers.push(closer);
    }

    fn end(&mut self) {
        match self.closers.pop() {
            Some(Closer::Nothing) | None => {}
            Some(Closer::Inline(close)) => {
                self.out.push_str(close);
                self.link = self.link.saturating_sub(1);
            }
            Some(Closer::Counted(close, open)) => {
                self.out.push_str(close);
                let depth = match open {
                    "<b>" => &mut self.bold,
                    "<i>" => &mut self.italic,
                    _ => &mut self.strike,
                };
                *depth = depth.saturating_sub(1);
            }
            Some(Closer::Block(close)) => {
                self.out.push_str(close);
                self.blockquote = self.blockquote.saturating_sub(1);
                self.fresh = false;
                self.separate(2);
            }
            Some(Closer::Heading) => {
                self.bold = self.bold.saturating_sub(1);
                if self.bold == 0 {
                    self.out.push_str("</b>");
                }
                self.separate(2);
            }
            Some(Closer::Separate) => self.separate(2),
            Some(Closer::Code(close)) => {
                let code = self.code.take().unwrap_or_default();
                push_escaped(&mut self.out, code.strip_suffix('\n').unwrap_or(&code));
                self.out.push_str(close);
                self.fresh = false;
                self.separate(2);
            }
            Some(Closer::List) => {
                self.lists.pop();
                self.separate(if self.lists.is_empty() { 2 } else { 1 });
            }
            Some(Closer::Item) => {
                self.fresh = false;
                self.separate(1);
            }
        }
    }

    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(_) => self.end(),
            Event::Code(code) => {
                self.open("<code>", false);
                push_escaped(&mut self.out, &code);
                self.out.push_str("</code>");
                self.fresh = false;
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some(code) = self.code.as_mut() {
                    code.push('\n');
                } else {
                    self.separate(1);
                    self.flush();
                }
            }
            Event::Rule => {
                self.separate(2);
                self.text("———");
                self.separate(2);
            }
            Event::TaskListMarker(done) => self.text(if done { "☑ " } else { "☐ " }),
            Event::Text(text)
            | Event::Html(text)
            | Event::InlineHtml(text)
            | Event::InlineMath(text)
            | Event::DisplayMath(text)
            | Event::FootnoteReference(text) => self.text(&text),
        }
    }
}

/// A fence's language if it is a plain word Telegram accepts in `class="language-…"`.
fn safe_language(info: &str) -> Option<&str> {
    let language = info.split_whitespace().next()?;
    let plain = language.len() <= 32
        && language.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '_' | '#' | '.'));
    plain.then_some(language)
}

/// Telegram refuses the whole message when a link's target is not a URL it knows.
fn is_safe_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    ["http://", "https://", "tg://", "mailto:"]
        .iter()
        .any(|scheme| lower.starts_with(scheme) && lower.len() > scheme.len())
        && !url.chars().any(char::is_whitespace)
}

/// One indivisible unit of HTML for splitting.
#[derive(Debug, Clone, Copy)]
enum Atom<'a> {
    /// `<name …>`.
    Open { name: &'a str, raw: &'a str },
    /// `</name>`.
    Close { name: &'a str, raw: &'a str },
    /// One character or one entity (`&amp;`).
    Text(&'a str),
}

impl Atom<'_> {
    fn raw(&self) -> &str {
        match self {
            Atom::Open { raw, .. } | Atom::Close { raw, .. } | Atom::Text(raw) => raw,
        }
    }
}

/// Cuts HTML into atoms. Hand-written rather than an HTML parser crate because the input is the
/// small, flat tag set this module (or the platform's own templates) produced, and splitting
/// needs byte-exact pieces of the source, which DOM-building parsers do not give back.
fn atoms(html: &str) -> Vec<Atom<'_>> {
    let mut atoms = Vec::with_capacity(html.len());
    let mut rest = html;
    while let Some(c) = rest.chars().next() {
        let len = match c {
            '<' => match tag_len(rest) {
                Some(len) => {
                    let raw = &rest[..len];
                    rest = &rest[len..];
                    // A self-closing tag opens nothing; keep it whole.
                    if raw.ends_with("/>") {
                        atoms.push(Atom::Text(raw));
                        continue;
                    }
                    let closing = raw.starts_with("</");
                    let body = &raw[if closing { 2 } else { 1 }..len - 1];
                    let name_end = body.find(|c: char| c.is_whitespace() || c == '/').unwrap_or(body.len());
                    let name = &body[..name_end];
                    atoms.push(if closing { Atom::Close { name, raw } } else { Atom::Open { name, raw } });
                    continue;
                }
                None => 1,
            },
            '&' => entity_len(rest).unwrap_or(1),
            _ => c.len_utf8(),
        };
        atoms.push(Atom::Text(&rest[..len]));
        rest = &rest[len..];
    }
    atoms
}

/// Length of the tag at the start of `s` (`<b>`, `</a>`, `<a href="…">`), if it is one.
fn tag_len(s: &str) -> Option<usize> {
    let after = s.strip_prefix('<')?;
    let name_start = after.strip_prefix('/').unwrap_or(after);
    if !name_start.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let mut quote = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '>') => return Some(i + 1),
            (None, '<') => return None,
            _ => {}
        }
    }
    None
}

/// Length of the entity at the start of `s` (`&amp;`, `&#128512;`), if it is one.
fn entity_len(s: &str) -> Option<usize> {
    let end = s.char_indices().take(34).skip(1).find(|&(_, c)| c == ';')?.0;
    let name = &s[1..end];
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '#');
    valid.then_some(end + 1)
}

/// Whether these atoms show nothing but whitespace.
fn is_blank(atoms: &[Atom<'_>]) -> bool {
    atoms.iter().all(|a| match a {
        Atom::Text(t) => t.trim().is_empty(),
        _ => true,
    })
}

fn closing_len(stack: &[(&str, &str)]) -> usize {
    stack.iter().map(|(name, _)| utf16_len(name) + 3).sum()
}

/// Applies `atom` to the stack of open tags.
fn apply<'a>(stack: &mut Vec<(&'a str, &'a str)>, atom: Atom<'a>) {
    match atom {
        Atom::Open { name, raw } => stack.push((name, raw)),
        Atom::Close { name, .. } => {
            if let Some(at) = stack.iter().rposition(|(open, _)| open.eq_ignore_ascii_case(name)) {
                stack.truncate(at);
            }
        }
        Atom::Text(_) => {}
    }
}

/// Splits Telegram HTML into messages of at most `limit_utf16` UTF-16 code units each (markup
/// included, which is stricter than Telegram's count of the visible text).
///
/// Cuts prefer a blank line, then a line end, then a space, in the second half of a piece; then
/// the last character that fits. A cut never falls inside a tag or an entity, nor between the
/// two halves of a surrogate pair. Tags open at a cut are closed at the end of the piece and opened
/// again (with their attributes, e.g. a code block's language) at the start of the next, so every
/// piece parses on its own. Pieces with no visible text are left out, because Telegram refuses
/// empty messages; an input that fits is returned as it is.
///
/// Only when the tags open at a cut are themselves longer than the limit can a piece exceed it
/// (the split always makes progress); with Telegram's 4096 that takes tags no Baal text has.
pub fn split_message(html: &str, limit_utf16: usize) -> Vec<String> {
    let atoms = atoms(html);
    if is_blank(&atoms) {
        return Vec::new();
    }
    if utf16_len(html) <= limit_utf16 {
        return vec![html.to_owned()];
    }
    let mut pieces = Vec::new();
    let mut stack: Vec<(&str, &str)> = Vec::new();
    let mut start = 0;
    while start < atoms.len() {
        let cut = choose_cut(&atoms, start, &stack, limit_utf16);
        let mut piece = String::new();
        for (_, raw) in &stack {
            piece.push_str(raw);
        }
        for atom in &atoms[start..cut] {
            piece.push_str(atom.raw());
            apply(&mut stack, *atom);
        }
        // Line ends at the cut go after the closing tags: Telegram trims a message's trailing
        // whitespace, and an entity reaching into what it trimmed is refused.
        let trailing_whitespace = piece.split_off(piece.trim_end().len());
        for (name, _) in stack.iter().rev() {
            piece.push_str("</");
            piece.push_str(name);
            piece.push('>');
        }
        piece.push_str(&trailing_whitespace);
        if !is_blank(&atoms[start..cut]) {
            pieces.push(piece);
        }
        start = cut;
    }
    pieces
}

/// The end (exclusive atom index) of the piece that starts at `start` with `stack` open.
fn choose_cut(atoms: &[Atom<'_>], start: usize, stack: &[(&str, &str)], limit: usize) -> usize {
    let mut stack = stack.to_vec();
    // Length so far plus the closing tags the piece would need if cut here. It never decreases
    // along the piece (a closing tag moves its length from one term to the other), so the first
    // position past the limit ends the search.
    let mut used: usize = stack.iter().map(|(_, raw)| utf16_len(raw)).sum();
    let half = limit / 2;
    // Candidates are only taken from the second half, so a piece is never cut short for a
    // line end near its start.
    let (mut paragraph, mut line, mut space, mut any) = (None, None, None, None);
    let mut previous_char = None;
    let mut end = start;
    let mut closing = closing_len(&stack);
    while end < atoms.len() {
        let atom = atoms[end];
        let next_used = used + utf16_len(atom.raw());
        let next_stack = match atom {
            Atom::Text(_) => None,
            tag => {
                let mut next = stack.clone();
                apply(&mut next, tag);
                Some(next)
            }
        };
        let next_closing = next_stack.as_deref().map_or(closing, closing_len);
        if next_used + next_closing > limit {
            break;
        }
        used = next_used;
        closing = next_closing;
        if let Some(next) = next_stack {
            stack = next;
        }
        end += 1;
        if let Atom::Text(text) = atom {
            let cost = used + closing;
            let late = cost >= half;
            match text {
                "\n" if late && previous_char == Some("\n") => paragraph = Some(end),
                "\n" if late => line = Some(end),
                " " if late => space = Some(end),
                _ => {}
            }
            any = Some(end);
            previous_char = Some(text);
        }
    }
    if end == atoms.len() {
        return end;
    }
    let cut = paragraph.or(line).or(space).or(any);
    let mut cut = match cut {
        Some(cut) => cut,
        // Not even one character fits beside the open tags: take the next character anyway so the
        // split ends (see the note on `split_message`).
        None => {
            let first_text = atoms[start..].iter().position(|a| matches!(a, Atom::Text(_)));
            start + first_text.map_or(atoms.len() - start, |i| i + 1)
        }
    };
    // Closing tags right after the cut belong to this piece: they cost nothing extra here and
    // would leave an empty `<b></b>` at the start of the next one.
    while let Some(Atom::Close { .. }) = atoms.get(cut) {
        cut += 1;
    }
    cut
}

/// Whether every tag in `html` is closed in order. Used to vet rendered output.
pub(crate) fn tags_are_balanced(html: &str) -> bool {
    let mut stack = Vec::new();
    for atom in atoms(html) {
        match atom {
            Atom::Open { name, .. } => stack.push(name),
            Atom::Close { name, .. } => {
                if stack.pop() != Some(name) {
                    return false;
                }
            }
            Atom::Text(_) => {}
        }
    }
    stack.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a reader sees: tags dropped, the few entities Baal writes decoded.
    fn visible(html: &str) -> String {
        let mut out = String::new();
        for atom in atoms(html) {
            if let Atom::Text(text) = atom {
                out.push_str(match text {
                    "&amp;" => "&",
                    "&lt;" => "<",
                    "&gt;" => ">",
                    "&quot;" => "\"",
                    other => other,
                });
            }
        }
        out
    }

    #[test]
    fn utf16_counts_surrogate_pairs_twice() {
        assert_eq!(utf16_len("abc"), 3);
        assert_eq!(utf16_len("日本"), 2);
        assert_eq!(utf16_len("😀"), 2);
        assert_eq!(utf16_len("a😀b"), 4);
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(escape_html(r#"<b>"Tom & Jerry"</b>"#), "&lt;b&gt;&quot;Tom &amp; Jerry&quot;&lt;/b&gt;");
        assert_eq!(escape_html("plain 😀"), "plain 😀");
    }

    #[test]
    fn inline_markdown_becomes_telegram_tags() {
        assert_eq!(
            markdown_to_html("**bold** *it* ~~gone~~ `a<b` [site](https://x.org/?a=1&b=2)"),
            "<b>bold</b> <i>it</i> <s>gone</s> <code>a&lt;b</code> <a href=\"https://x.org/?a=1&amp;b=2\">site</a>"
        );
    }

    #[test]
    fn headings_are_bold_and_paragraphs_separated() {
        assert_eq!(
            markdown_to_html("# Title **x**\n\nSome text.\nNext line."),
            "<b>Title x</b>\n\nSome text.\nNext line."
        );
    }

    #[test]
    fn fenced_code_keeps_its_language_and_escapes() {
        assert_eq!(
            markdown_to_html("Run:\n\n```rust\nfn main() { a < b && c }\n```\n\nDone"),
            "Run:\n\n<pre><code class=\"language-rust\">fn main() { a &lt; b &amp;&amp; c }</code></pre>\n\nDone"
        );
        assert_eq!(markdown_to_html("```\nplain\n```"), "<pre>plain</pre>");
        assert_eq!(markdown_to_html("```evil\"lang\nx\n```"), "<pre>x</pre>");
    }

    #[test]
    fn lists_become_bullets_and_numbers() {
        assert_eq!(
            markdown_to_html("- one\n- two\n  - inner\n\n1. first\n2. second"),
            "• one\n• two\n    • inner\n\n1. first\n2. second"
        );
    }

    #[test]
    fn blockquotes_are_never_nested() {
        assert_eq!(markdown_to_html("> quoted\n>\n> > deeper"), "<blockquote>quoted\n\ndeeper</blockquote>");
    }

    #[test]
    fn raw_html_and_unsafe_links_are_shown_as_text() {
        assert_eq!(markdown_to_html("<script>x</script>"), "&lt;script&gt;x&lt;/script&gt;");
        assert_eq!(markdown_to_html("a <span>b</span>"), "a &lt;span&gt;b&lt;/span&gt;");
        assert_eq!(markdown_to_html("[x](javascript:alert(1))"), "x");
        assert_eq!(markdown_to_html("![alt](https://img.org/a.png)"), "<a href=\"https://img.org/a.png\">alt</a>");
    }

    #[test]
    fn rendered_output_is_always_balanced() {
        for md in ["**a *b** c*", "# **x**", "> - a\n> - **b", "[**x**](https://a.b)", "***", "`", "~~~\nx"] {
            let html = markdown_to_html(md);
            assert!(tags_are_balanced(&html), "{md:?} → {html:?}");
        }
    }

    /// A streamed answer is rendered at every length it passes through: each prefix must be
    /// markup Telegram accepts, and should be the writer's own (balanced without the guard
    /// falling back to plain text, which would flash the formatting off mid-answer).
    #[test]
    fn every_prefix_of_an_answer_renders_balanced() {
        let answer = "# Plan **now**\n\nUse `a<b && c>d` here — 😀 & more *ital **both** it* ~~gone~~.\n\n\
                      > quoted **bold\n> > deeper `code`\n\n- one [link](https://e.org/?a=1&b=2)\n  - inner **x**\n\
                      1. first\n2. [ ] task\n\n```rust\nfn main() { if a < b && c > d { println!(\"&amp;\"); } }\n```\n\n\
                      | a | b |\n|---|---|\n| 1 | 2 |\n\n***\n\n~~~\nraw <tag>\n~~~\nEnd 🦀 **unclosed *nested";
        let mut checked = 0;
        for (end, _) in answer.char_indices().skip(1).chain([(answer.len(), ' ')]) {
            let prefix = &answer[..end];
            let written = write_html(prefix);
            assert!(tags_are_balanced(&written), "the writer left {prefix:?} unbalanced: {written:?}");
            assert_eq!(markdown_to_html(prefix), written);
            for piece in split_message(&written, 64) {
                assert!(tags_are_balanced(&piece), "{prefix:?} split into {piece:?}");
            }
            checked += 1;
        }
        assert_eq!(checked, answer.chars().count());
        let open_fence = markdown_to_html("Run:\n\n```rust\nfn main() { a < b");
        assert_eq!(open_fence, "Run:\n\n<pre><code class=\"language-rust\">fn main() { a &lt; b</code></pre>");
        assert_eq!(markdown_to_html("so **bold"), "so **bold");
    }

    #[test]
    fn short_input_is_returned_unchanged_and_blank_input_gives_nothing() {
        assert_eq!(split_message("<b>hi</b>", 4096), vec!["<b>hi</b>"]);
        assert!(split_message("", 4096).is_empty());
        assert!(split_message(" \n <b> </b>", 4096).is_empty());
    }

    #[test]
    fn splits_prefer_paragraphs_then_lines() {
        let text = format!("{}\n\n{}\n{}", "a".repeat(60), "b".repeat(30), "c".repeat(30));
        let pieces = split_message(&text, 80);
        assert_eq!(pieces, vec![format!("{}\n\n", "a".repeat(60)), format!("{}\n{}", "b".repeat(30), "c".repeat(30))]);
        let text = format!("{}\n{}", "a".repeat(60), "b".repeat(60));
        assert_eq!(split_message(&text, 80), vec![format!("{}\n", "a".repeat(60)), "b".repeat(60)]);
    }

    #[test]
    fn a_cut_inside_a_code_block_closes_and_reopens_it() {
        let code: String = (0..40).map(|i| format!("line {i}\n")).collect();
        let html = format!("<pre><code class=\"language-rust\">{}</code></pre>", escape_html(&code));
        let pieces = split_message(&html, 120);
        assert!(pieces.len() > 2);
        assert!(pieces[0].ends_with("</code></pre>\n"), "line ends go after the closing tags: {:?}", pieces[0]);
        for piece in &pieces {
            assert!(utf16_len(piece) <= 120, "{piece}");
            assert!(piece.starts_with("<pre><code class=\"language-rust\">"), "{piece}");
            assert!(piece.trim_end().ends_with("</code></pre>"), "{piece}");
        }
        assert_eq!(pieces.iter().map(|p| visible(p)).collect::<String>(), code);
    }

    #[test]
    fn entities_and_surrogate_pairs_are_never_cut() {
        let html = "&amp;😀".repeat(50);
        for limit in [5, 6, 7, 9, 13] {
            let pieces = split_message(&html, limit);
            for piece in &pieces {
                assert!(utf16_len(piece) <= limit);
                assert!(atoms(piece).iter().all(|a| !matches!(a, Atom::Text("&"))), "{piece}");
            }
            assert_eq!(pieces.concat(), html);
        }
    }

    #[test]
    fn exactly_the_limit_is_one_piece() {
        let html = "😀".repeat(2048);
        assert_eq!(split_message(&html, TELEGRAM_TEXT_LIMIT).len(), 1);
        let pieces = split_message(&format!("{html}x"), TELEGRAM_TEXT_LIMIT);
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| utf16_len(p) <= TELEGRAM_TEXT_LIMIT));
    }

    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{1,12}",
            "[日本語の文字]{1,8}",
            "[😀🎉🦀👍]{1,4}",
            Just(" ".to_owned()),
            Just("\n".to_owned()),
            Just("\n\n".to_owned()),
            Just("&".to_owned()),
            Just("<tag>".to_owned()),
        ]
    }

    fn markup() -> impl Strategy<Value = String> {
        let leaf = prop::collection::vec(fragment(), 1..6).prop_map(|parts| escape_html(&parts.concat()));
        leaf.prop_recursive(3, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..5).prop_map(|parts| parts.concat()),
                inner.clone().prop_map(|s| format!("<b>{s}</b>")),
                inner.clone().prop_map(|s| format!("<i>{s}</i>")),
                inner.clone().prop_map(|s| format!("<a href=\"https://e.org/?q=1&amp;r=2\">{s}</a>")),
                inner.prop_map(|s| format!("<pre><code class=\"language-rust\">{s}</code></pre>")),
            ]
        })
    }

    proptest! {
        #[test]
        fn splitting_preserves_text_respects_the_limit_and_balances_tags(
            pieces in prop::collection::vec(markup(), 1..12),
            // Above the longest run of open tags the generator nests (see the note on `split_message`).
            limit in 160usize..500,
        ) {
            let html = pieces.concat();
            // Blank input gives no piece at all (tested above).
            prop_assume!(!visible(&html).trim().is_empty());
            let split = split_message(&html, limit);
            for piece in &split {
                prop_assert!(utf16_len(piece) <= limit, "{} > {limit}: {piece:?}", utf16_len(piece));
                prop_assert!(tags_are_balanced(piece), "unbalanced: {piece:?}");
            }
            let joined: String = split.iter().map(|p| visible(p)).collect();
            let original = visible(&html);
            // Whitespace that would make a message of its own is the one thing left out (Telegram
            // refuses blank messages); every other character comes back, in order.
            if joined != original {
                let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
                prop_assert_eq!(squeeze(&joined), squeeze(&original));
            }
        }

        #[test]
        fn rendered_markdown_always_balances(text in prop::collection::vec(
            prop_oneof![fragment(), Just("**".to_owned()), Just("*".to_owned()), Just("`".to_owned()),
                Just("```\n".to_owned()), Just("# ".to_owned()), Just("> ".to_owned()), Just("- ".to_owned()),
                Just("~~".to_owned()), Just("[x](https://a.b)".to_owned())], 0..40)) {
            // The writer's own output, so the guard in `markdown_to_html` is not what passes it.
            let html = write_html(&text.concat());
            prop_assert!(tags_are_balanced(&html), "{html:?}");
        }
    }
}
