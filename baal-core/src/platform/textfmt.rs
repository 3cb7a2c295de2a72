//! Stand-ins for `platform::render` (built on the `telegram` branch) until it lands in main: the
//! same three functions, deliberately simple (agent markdown is shown as escaped plain text).

/// Escapes `&`, `<`, `>` and `"` for Telegram HTML.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Agent markdown as Telegram HTML (here: escaped plain text).
pub(crate) fn markdown_to_html(markdown: &str) -> String {
    escape_html(markdown)
}

/// Splits HTML into pieces of at most `limit_utf16` UTF-16 units, preferring line breaks, never
/// cutting inside a tag or an entity.
pub(crate) fn split_message(html: &str, limit_utf16: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = html;
    while !rest.is_empty() {
        if rest.encode_utf16().count() <= limit_utf16 {
            pieces.push(rest.to_owned());
            break;
        }
        let mut units = 0;
        let mut hard = 0;
        let mut last_newline = None;
        let mut last_space = None;
        let mut in_markup = false;
        for (i, c) in rest.char_indices() {
            units += c.len_utf16();
            if units > limit_utf16 {
                break;
            }
            match c {
                '<' | '&' => in_markup = true,
                '>' | ';' if in_markup => in_markup = false,
                _ => {}
            }
            if !in_markup {
                hard = i + c.len_utf8();
                if c == '\n' {
                    last_newline = Some(hard);
                } else if c == ' ' {
                    last_space = Some(hard);
                }
            }
        }
        let cut = last_newline.or(last_space).unwrap_or(hard).max(rest.chars().next().map_or(1, char::len_utf8));
        pieces.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start();
    }
    pieces.retain(|p| !p.is_empty());
    pieces
}
