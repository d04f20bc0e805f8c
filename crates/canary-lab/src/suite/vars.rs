//! `{{repo.NAME}}` in a suite: a repo's variables are substituted as values, never as YAML.
//! Every scalar that holds a placeholder is found by a small scan of the suite's text (quoted,
//! plain or block), and written back with the values in it, encoded for that scalar's kind:
//! quoted and plain scalars become one double-quoted scalar (JSON escapes, which YAML reads the
//! same way), block scalars keep their lines with each value's lines indented like the block.
//! So a value with quotes of either kind, a colon, a `#` or a newline stays text: it can never
//! add keys, items or steps.

use regex::Regex;
use std::collections::BTreeMap;

/// A placeholder a repo has no value for: its byte span and name.
#[derive(Debug, PartialEq)]
pub struct Missing {
    pub start: usize,
    pub len: usize,
    pub name: String,
}

fn pattern() -> Regex {
    Regex::new(r"\{\{\s*repo\.([A-Za-z0-9_]+)\s*\}\}").expect("static regex")
}

/// The first placeholder `vars` has no value for.
pub fn missing(source: &str, vars: &BTreeMap<String, String>) -> Option<Missing> {
    pattern()
        .captures_iter(source)
        .find(|c| !vars.contains_key(&c[1]))
        .map(|c| {
            let whole = c.get(0).expect("match");
            Missing {
                start: whole.start(),
                len: whole.len(),
                name: c[1].to_string(),
            }
        })
}

/// One scalar of the text: where it is, what kind, and its content as the author wrote it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Plain,
    Single,
    Double,
}

/// Replaces every placeholder with its value (all must exist: check with [`missing`] first).
pub fn substitute(source: &str, vars: &BTreeMap<String, String>) -> String {
    let pat = pattern();
    if !pat.is_match(source) {
        return source.to_string();
    }
    let value = |text: &str| -> String {
        pat.replace_all(text, |c: &regex::Captures| vars.get(&c[1]).cloned().unwrap_or_default())
            .to_string()
    };
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    // Flow depth ([ and {) and, for block scalars, the indentation their lines keep.
    let mut depth = 0usize;
    let mut block: Option<usize> = None;
    let mut line_start = true;
    while i < bytes.len() {
        if line_start {
            line_start = false;
            let indent = bytes[i..].iter().take_while(|b| **b == b' ').count();
            let end = source[i..].find('\n').map_or(source.len(), |n| i + n);
            let line = &source[i..end];
            if let Some(min) = block {
                if line.trim().is_empty() || indent >= min {
                    out.push_str(&block_line(line, indent, &pat, vars));
                    i = end;
                    continue;
                }
                block = None;
            }
        }
        let b = bytes[i];
        match b {
            b'\n' => {
                out.push('\n');
                i += 1;
                line_start = true;
            }
            b'#' if i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n') => {
                let end = source[i..].find('\n').map_or(source.len(), |n| i + n);
                out.push_str(&source[i..end]);
                i = end;
            }
            // `{{repo.X}}` where a value begins is a placeholder, not a flow mapping.
            b'{' if source[i..].starts_with("{{") && pat.find(&source[i..]).is_some_and(|m| m.start() == 0) => {
                i = push_plain(&mut out, source, i, depth > 0, &pat, &value);
            }
            b'[' | b'{' => {
                depth += 1;
                out.push(b as char);
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                out.push(b as char);
                i += 1;
            }
            b'|' | b'>' if depth == 0 && is_token_start(bytes, i) => {
                // A block scalar header: its lines are those indented more than this line.
                let end = source[i..].find('\n').map_or(source.len(), |n| i + n);
                out.push_str(&source[i..end]);
                let line_begin = source[..i].rfind('\n').map_or(0, |n| n + 1);
                let own = bytes[line_begin..].iter().take_while(|c| **c == b' ').count();
                block = Some(own + 1);
                i = end;
            }
            b'\'' | b'"' if is_token_start(bytes, i) => {
                let kind = if b == b'\'' { Kind::Single } else { Kind::Double };
                let (content, end) = quoted(source, i, kind);
                push_scalar(&mut out, &source[i..end], &content, kind, &pat, &value);
                i = end;
            }
            b' ' | b'\t' | b',' | b':' | b'-' | b'?' => {
                out.push(b as char);
                i += 1;
            }
            _ => i = push_plain(&mut out, source, i, depth > 0, &pat, &value),
        }
    }
    out
}

/// A block scalar's line: values keep their lines, indented like the block.
fn block_line(line: &str, indent: usize, pat: &Regex, vars: &BTreeMap<String, String>) -> String {
    let pad = " ".repeat(indent);
    pat.replace_all(line, |c: &regex::Captures| {
        vars.get(&c[1])
            .cloned()
            .unwrap_or_default()
            .replace('\n', &format!("\n{pad}"))
    })
    .into_owned()
}

/// The plain scalar at `i` with its placeholders replaced, then the blanks after it; returns
/// where it ends.
fn push_plain(
    out: &mut String,
    source: &str,
    i: usize,
    in_flow: bool,
    pat: &Regex,
    value: &dyn Fn(&str) -> String,
) -> usize {
    let end = plain_end(source, i, in_flow);
    let raw = &source[i..end];
    push_scalar(out, raw, raw.trim_end(), Kind::Plain, pat, value);
    out.push_str(&raw[raw.trim_end().len()..]);
    end
}

/// A quote at `i` opens a scalar when it stands where a value may begin.
fn is_token_start(bytes: &[u8], i: usize) -> bool {
    i == 0
        || matches!(
            bytes[i - 1],
            b' ' | b'\t' | b'\n' | b'[' | b'{' | b',' | b':' | b'-' | b'?'
        )
}

/// The decoded content of the quoted scalar at `start` and the byte after its closing quote.
fn quoted(source: &str, start: usize, kind: Kind) -> (String, usize) {
    let bytes = source.as_bytes();
    let mut content = String::new();
    let mut i = start + 1;
    let q = if kind == Kind::Single { b'\'' } else { b'"' };
    while i < bytes.len() {
        let b = bytes[i];
        if b == q {
            if kind == Kind::Single && bytes.get(i + 1) == Some(&b'\'') {
                content.push('\'');
                i += 2;
                continue;
            }
            return (content, i + 1);
        }
        if kind == Kind::Double && b == b'\\' && i + 1 < bytes.len() {
            // Escapes are kept as written: the scalar is written back double-quoted.
            let ch_len = source[i + 1..].chars().next().map_or(1, char::len_utf8);
            content.push_str(&source[i..i + 1 + ch_len]);
            i += 1 + ch_len;
            continue;
        }
        let ch = source[i..].chars().next().expect("in bounds");
        content.push(ch);
        i += ch.len_utf8();
    }
    (content, bytes.len())
}

/// Where a plain scalar starting at `i` ends: the line's end, a comment, or (in flow context)
/// a `,`, `]` or `}`; a `: ` ends a key.
fn plain_end(source: &str, i: usize, flow: bool) -> usize {
    let bytes = source.as_bytes();
    let mut j = i;
    while j < bytes.len() {
        let b = bytes[j];
        if b == b'\n' || (b == b'#' && j > i && matches!(bytes[j - 1], b' ' | b'\t')) {
            break;
        }
        if flow && matches!(b, b',' | b']' | b'}') {
            break;
        }
        if b == b':' && matches!(bytes.get(j + 1), None | Some(b' ' | b'\t' | b'\n')) {
            break;
        }
        if flow && b == b':' && matches!(bytes.get(j + 1), Some(b',' | b']' | b'}')) {
            break;
        }
        j += 1;
    }
    j
}

/// Writes one scalar: unchanged when it holds no placeholder, else double-quoted with the values.
fn push_scalar(out: &mut String, raw: &str, content: &str, kind: Kind, pat: &Regex, value: &dyn Fn(&str) -> String) {
    if !pat.is_match(content) {
        out.push_str(if kind == Kind::Plain { content } else { raw });
        return;
    }
    // The author's text between placeholders keeps its meaning: a double-quoted scalar's
    // escapes are kept; single-quoted and plain text is escaped afresh.
    let mut s = String::from("\"");
    let mut last = 0;
    for m in pat.find_iter(content) {
        let between = &content[last..m.start()];
        if kind == Kind::Double {
            s.push_str(between);
        } else {
            s.push_str(&json_inner(between));
        }
        s.push_str(&json_inner(&value(m.as_str())));
        last = m.end();
    }
    let rest = &content[last..];
    if kind == Kind::Double {
        s.push_str(rest);
    } else {
        s.push_str(&json_inner(rest));
    }
    s.push('"');
    out.push_str(&s);
}

/// A string as the inside of a JSON (and YAML double-quoted) string.
fn json_inner(s: &str) -> String {
    let j = serde_json::to_string(s).expect("json");
    j[1..j.len() - 1].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn parsed(text: &str) -> serde_json::Value {
        serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn values_with_quotes_colons_and_newlines_stay_values() {
        let v = vars(&[
            ("old", "return f'{GREETING}, {name}!'"),
            ("dq", "say \"hi\": now # not a comment"),
            ("nl", "line one\n- step: injected\nkey: value"),
            ("file", "greeting/__init__.py"),
        ]);
        let text = "steps:\n  - edit: {file: '{{repo.file}}', replace: '{{repo.old}}', with: \"x {{repo.dq}} y\"}\n  - say: {{repo.nl}}\n  - plain: a {{repo.dq}} b\n";
        let out = substitute(text, &v);
        let got = parsed(&out);
        assert_eq!(got["steps"].as_array().unwrap().len(), 3, "no step was added:\n{out}");
        assert_eq!(got["steps"][0]["edit"]["file"], "greeting/__init__.py");
        assert_eq!(got["steps"][0]["edit"]["replace"], "return f'{GREETING}, {name}!'");
        assert_eq!(got["steps"][0]["edit"]["with"], "x say \"hi\": now # not a comment y");
        assert_eq!(got["steps"][1]["say"], "line one\n- step: injected\nkey: value");
        assert_eq!(got["steps"][2]["plain"], "a say \"hi\": now # not a comment b");
        assert!(got.get("key").is_none());
    }

    #[test]
    fn the_authors_own_text_and_escapes_are_kept() {
        let v = vars(&[("x", "it's")]);
        let text = "a: 'don''t {{repo.x}}'\nb: \"tab\\t{{repo.x}}\\u0041\"\nc: don't touch # a comment with {{repo.x}}\nd: [ '{{repo.x}}', plain ]\n";
        let got = parsed(&substitute(text, &v));
        assert_eq!(got["a"], "don't it's");
        assert_eq!(got["b"], "tab\tit'sA");
        assert_eq!(got["c"], "don't touch");
        assert_eq!(got["d"], serde_json::json!(["it's", "plain"]));
        assert_eq!(substitute("no: placeholders\n", &v), "no: placeholders\n");
    }

    #[test]
    fn block_scalars_take_multi_line_values_at_their_indentation() {
        let v = vars(&[("body", "first\nsecond: not a key")]);
        let text = "steps:\n  - run: |\n      echo start\n      {{repo.body}}\n  - next: 1\n";
        let got = parsed(&substitute(text, &v));
        assert_eq!(got["steps"][0]["run"], "echo start\nfirst\nsecond: not a key\n");
        assert_eq!(got["steps"][1]["next"], 1);
    }

    #[test]
    fn a_missing_variable_is_found_with_its_place() {
        let m = missing("a: '{{ repo.nope }}'", &vars(&[("x", "1")])).unwrap();
        assert_eq!((m.start, m.len, m.name.as_str()), (4, 15, "nope"));
    }
}
