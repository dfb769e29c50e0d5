//! The documentation holds together: every relative link in the README,
//! the pages of `docs/` and the Kubernetes page leads to a file that
//! exists, and every `#anchor` to a heading of its target, named as GitHub
//! names it; and the README stays a front page short enough to read.
//!
//! Links are the inline kind (`[text](target)`, `![alt](target)`) and
//! reference definitions (`[name]: target`); those inside fenced code
//! blocks and code spans are examples, not links. Absolute URLs (`http:`,
//! `https:`, `mailto:`) are not followed. Headings are ATX ones (`## …`),
//! the only kind these files use.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The README's length limit, in lines: past it, a section belongs in
/// `docs/`.
const README_MAX_LINES: usize = 400;

/// The workspace root, where the README is.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate sits in the workspace")
        .to_path_buf()
}

/// The files whose links are checked: the README, every page of `docs/`
/// and the Kubernetes page.
fn documents() -> Vec<PathBuf> {
    let root = root();
    let mut files = vec![
        root.join("README.md"),
        root.join("deploy/kubernetes/README.md"),
    ];
    let docs = std::fs::read_dir(root.join("docs")).expect("docs/ exists");
    for entry in docs {
        let path = entry.expect("a docs/ entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One link as written: the line it is on and its target.
#[derive(Debug)]
struct Link {
    line: usize,
    target: String,
}

/// `text` with the lines of its fenced code blocks emptied: the line
/// numbers stay those of the file.
fn outside_fences(text: &str) -> String {
    let mut fence: Option<(char, usize)> = None;
    let mut kept = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = marker.map_or(0, |m| trimmed.chars().take_while(|c| *c == m).count());
        match (fence, marker) {
            (None, Some(m)) if run >= 3 => {
                fence = Some((m, run));
                kept.push("");
            }
            (Some((m, open)), Some(c))
                if c == m && run >= open && trimmed[run..].trim().is_empty() =>
            {
                fence = None;
                kept.push("");
            }
            (None, _) => kept.push(line),
            (Some(_), _) => kept.push(""),
        }
    }
    kept.join("\n")
}

/// `text` with its code spans blanked out (newlines kept), so that
/// `[a](b)` shown as code is not read as a link. A span may run over
/// several lines of a paragraph, never past a blank line; a run of
/// backticks nothing closes is plain text.
fn without_code_spans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let run_at = |i: usize| chars[i..].iter().take_while(|c| **c == '`').count();
    let mut out = chars.clone();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let ticks = run_at(i);
        let mut j = i + ticks;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '\n'
                && chars[j + 1..]
                    .iter()
                    .take_while(|c| **c != '\n')
                    .all(|c| c.is_whitespace())
            {
                break;
            }
            if chars[j] == '`' {
                let run = run_at(j);
                if run == ticks {
                    close = Some(j + run);
                    break;
                }
                j += run;
            } else {
                j += 1;
            }
        }
        match close {
            Some(after) => {
                for c in &mut out[i..after] {
                    if *c != '\n' {
                        *c = ' ';
                    }
                }
                i = after;
            }
            None => i += ticks,
        }
    }
    out.into_iter().collect()
}

/// The destination of an inline link, from just after its `(`: up to the
/// matching `)`, without angle brackets or a title.
fn destination(after_paren: &str) -> Option<String> {
    let mut depth = 0usize;
    let mut end = None;
    for (i, c) in after_paren.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                end = Some(i);
                break;
            }
            ')' => depth -= 1,
            _ => {}
        }
    }
    let inside = after_paren[..end?].trim();
    let target = match inside.strip_prefix('<') {
        Some(bracketed) => bracketed.split('>').next().unwrap_or_default(),
        None => inside.split_whitespace().next().unwrap_or_default(),
    };
    Some(target.to_owned())
}

/// Every link of a Markdown text, outside code.
fn links_in(text: &str) -> Vec<Link> {
    let prose = without_code_spans(&outside_fences(text));
    let line_of = |at: usize| prose[..at].matches('\n').count() + 1;
    let mut links = Vec::new();
    // Reference definitions: `[name]: target` on a line of their own.
    let mut at = 0;
    for line in prose.split('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some(close) = trimmed.find("]:")
            && !trimmed[..close].contains("](")
            && let Some(target) = trimmed[close + 2..].split_whitespace().next()
        {
            let target = target.trim_start_matches('<').trim_end_matches('>');
            links.push(Link {
                line: line_of(at),
                target: target.to_owned(),
            });
        }
        at += line.len() + 1;
    }
    // Inline links and images: `](target)`, the text possibly on an
    // earlier line.
    let mut from = 0;
    while let Some(found) = prose[from..].find("](") {
        let after = from + found + 2;
        if let Some(target) = destination(&prose[after..]) {
            links.push(Link {
                line: line_of(after),
                target,
            });
        }
        from = after;
    }
    links.sort_by_key(|l| l.line);
    links
}

/// Whether a target leaves the repository: such links are not followed.
fn is_absolute(target: &str) -> bool {
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| target.to_ascii_lowercase().starts_with(scheme))
}

/// `%20` and the like, decoded, as a browser does before asking for a
/// path.
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A heading's text as GitHub renders it before making its anchor: code
/// spans keep their content, links keep their text, emphasis and HTML tags
/// go.
fn rendered_heading(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    // Code spans first: their content is kept as is.
    while let Some(start) = rest.find('`') {
        out.push_str(&without_markup(&rest[..start]));
        let ticks = rest[start..].chars().take_while(|c| *c == '`').count();
        let after = &rest[start + ticks..];
        match after.find(&"`".repeat(ticks)) {
            Some(end) => {
                out.push_str(after[..end].trim());
                rest = &after[end + ticks..];
            }
            None => {
                out.push_str(&rest[start..start + ticks]);
                rest = after;
            }
        }
    }
    out.push_str(&without_markup(rest));
    out
}

/// Text outside code spans without its markup: `[text](url)` becomes
/// `text`, `<tag>`s go, and so do `*` and the `_` that open or close
/// emphasis (an `_` inside a word stays, as in `snake_case`).
fn without_markup(text: &str) -> String {
    let mut plain = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|c| open + c) else {
            break;
        };
        let Some(end) = rest[close + 2..].find(')').map(|e| close + 2 + e) else {
            break;
        };
        plain.push_str(rest[..open].trim_end_matches('!'));
        plain.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    plain.push_str(rest);

    let mut no_tags = String::new();
    let mut in_tag = false;
    for c in plain.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => no_tags.push(c),
            _ => {}
        }
    }

    let chars: Vec<char> = no_tags.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        let word = |j: Option<usize>| {
            j.and_then(|j| chars.get(j))
                .is_some_and(|c| c.is_alphanumeric())
        };
        match c {
            '*' => {}
            '_' if !(word(i.checked_sub(1)) && word(Some(i + 1))) => {}
            c => out.push(*c),
        }
    }
    out
}

/// GitHub's anchor for a heading: lowercase; letters, digits, `_`, `-`
/// and spaces kept, every other character dropped; each space a hyphen.
fn slug(heading: &str) -> String {
    rendered_heading(heading)
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown text, one per heading outside code, a repeat
/// of an earlier one numbered `-1`, `-2`, … as GitHub does.
fn anchors_of(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    for line in outside_fences(text).lines() {
        let trimmed = line.trim_start();
        if line.len() - trimmed.len() > 3 {
            continue;
        }
        let level = trimmed.chars().take_while(|c| *c == '#').count();
        let rest = &trimmed[level..];
        if !(1..=6).contains(&level) || !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
            continue;
        }
        // A closing run of `#`, after a space, is not part of the text.
        let text = rest.trim();
        let without_closing = text.trim_end_matches('#');
        let text = if without_closing.is_empty() || without_closing.ends_with([' ', '\t']) {
            without_closing.trim_end()
        } else {
            text
        };
        let base = slug(text);
        let mut anchor = base.clone();
        let count = seen.entry(base.clone()).or_insert(0);
        if *count > 0 {
            anchor = format!("{base}-{count}");
        }
        *count += 1;
        anchors.insert(anchor);
    }
    anchors
}

/// `path` as the reader knows it: from the workspace root.
fn shown(path: &Path) -> String {
    let root = root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// What is wrong with one link of `file`, if anything.
fn broken(file: &Path, link: &Link) -> Option<String> {
    let (path, anchor) = match link.target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (link.target.as_str(), None),
    };
    let path = path.split('?').next().unwrap_or_default();
    let target = if path.is_empty() {
        file.to_path_buf()
    } else {
        file.parent()
            .expect("a document sits in a folder")
            .join(percent_decoded(path))
    };
    if !target.exists() {
        return Some(format!("{} does not exist", shown(&target)));
    }
    let anchor = anchor?;
    if target.extension().is_none_or(|e| e != "md") {
        return Some(format!(
            "#{anchor}: {} is not Markdown, it has no headings to point at",
            shown(&target)
        ));
    }
    let anchors = anchors_of(&read(&target));
    let wanted = percent_decoded(anchor).to_lowercase();
    (!anchors.contains(&wanted)).then(|| {
        format!(
            "#{anchor} is no heading of {} (its anchors: {})",
            shown(&target),
            anchors.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in documents() {
        for link in links_in(&read(&file)) {
            if link.target.is_empty() || is_absolute(&link.target) {
                continue;
            }
            checked += 1;
            if let Some(why) = broken(&file, &link) {
                failures.push(format!(
                    "{}:{}: ({}) {why}",
                    shown(&file),
                    link.line,
                    link.target
                ));
            }
        }
    }
    assert!(checked > 0, "no relative link found: is the parsing right?");
    assert!(
        failures.is_empty(),
        "{} broken link(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_readme_is_a_front_page_under_400_lines() {
    let lines = read(&root().join("README.md")).lines().count();
    assert!(
        lines < README_MAX_LINES,
        "README.md has {lines} lines, {README_MAX_LINES} or more: move a section into docs/ and link to it"
    );
}

#[test]
fn anchors_are_named_as_github_names_them() {
    let text = "# traced-jobs\n\
                ## Kafka: the trace goes on to the alerts service\n\
                ### Settings (`QueueConfig`)\n\
                ## Benchmark against BullMQ, Celery and apalis-redis\n\
                ## `QUEUE_SHARDS` and _emphasis_ ##\n\
                ## See [the queue](queue.md) → here\n\
                ## Notes\n\
                ```\n\
                ## Notes\n\
                ```\n\
                ## Notes\n\
                ## Notes\n";
    let anchors = anchors_of(text);
    let expected = [
        "traced-jobs",
        "kafka-the-trace-goes-on-to-the-alerts-service",
        "settings-queueconfig",
        "benchmark-against-bullmq-celery-and-apalis-redis",
        "queue_shards-and-emphasis",
        "see-the-queue--here",
        "notes",
        "notes-1",
        "notes-2",
    ];
    assert_eq!(
        anchors,
        expected
            .iter()
            .map(|a| a.to_string())
            .collect::<BTreeSet<_>>()
    );
}

#[test]
fn links_in_code_are_examples_not_links() {
    let text = "see [the queue](docs/queue.md#design) and ![chart](docs/bench.png)\n\
                `[not](a-link.md)` in a code span, and one `over two\n\
                lines [not](a-link-over-lines.md)` of a paragraph\n\
                ```md\n\
                [not](a-link-either.md)\n\
                ```\n\
                an unclosed ` backtick, then [a link split\n\
                over lines](docs/api.md)\n\
                \n\
                [ref]: docs/settings.md\n";
    let found: Vec<(usize, String)> = links_in(text)
        .into_iter()
        .map(|l| (l.line, l.target))
        .collect();
    let expected = [
        (1, "docs/queue.md#design"),
        (1, "docs/bench.png"),
        (8, "docs/api.md"),
        (10, "docs/settings.md"),
    ];
    assert_eq!(
        found,
        expected.map(|(line, target)| (line, target.to_owned()))
    );
}
