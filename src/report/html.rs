//! Page assembly: one self-contained HTML document (inline CSS and SVG,
//! images as data URIs, no script, nothing fetched), built from sections of
//! tables, charts and notes.

use super::plot::{Figure, LegendEntry, LineKind};

/// Text made safe for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A table; cells are text (escaped here).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table>\n<thead><tr>");
    for h in headers {
        s += &format!("<th>{}</th>", escape(h));
    }
    s += "</tr></thead>\n<tbody>\n";
    for row in rows {
        s += "<tr>";
        for cell in row {
            s += &format!("<td>{}</td>", escape(cell));
        }
        s += "</tr>\n";
    }
    s + "</tbody>\n</table>\n"
}

/// A chart with its legend and caption; `id` names it for tests and links.
pub fn figure(id: &str, caption: &str, fig: &Figure) -> String {
    format!(
        "<figure class=\"chart\" id=\"{id}\" data-chart=\"{id}\" data-points=\"{}\">\n{}\n{}<figcaption>{}</figcaption>\n</figure>\n",
        fig.points,
        fig.svg,
        legend(&fig.legend),
        escape(caption),
        id = escape(id),
    )
}

/// A chart's legend as a list under it (empty for none): each entry's line
/// drawn as the chart draws it, in its colour.
pub fn legend(entries: &[LegendEntry]) -> String {
    if entries.is_empty() {
        return String::new();
    }
    let mut s = String::from("<ul class=\"legend\">");
    for e in entries {
        let (width, style, opacity) = match e.kind {
            LineKind::Bold => (3, "solid", 1.0),
            LineKind::Faint => (2, "solid", 0.4),
            LineKind::Dashed => (2, "dashed", 1.0),
        };
        s += &format!(
            "<li><span class=\"swatch\" style=\"border-top: {width}px {style} rgb({}, {}, {}); opacity: {opacity}\"></span>{}</li>",
            e.color.0,
            e.color.1,
            e.color.2,
            escape(&e.name)
        );
    }
    s + "</ul>\n"
}

/// A remark where a chart or table cannot be shown, saying why.
pub fn note(text: &str) -> String {
    format!("<p class=\"note\">{}</p>\n", escape(text))
}

/// A titled section.
pub fn section(id: &str, title: &str, body: &str) -> String {
    format!(
        "<section id=\"{}\">\n<h2>{}</h2>\n{body}</section>\n",
        escape(id),
        escape(title)
    )
}

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1200px; padding: 16px 24px 48px; color: #222; background: #fafafa; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.subtitle { color: #555; margin-top: 0; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure.chart { margin: 0; background: #fff; border: 1px solid #e2e2e2; border-radius: 4px; padding: 6px; }
figure.chart svg { display: block; max-width: 100%; height: auto; }
.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 2px 16px; margin: 2px 6px; padding: 0; font-size: 0.8em; max-width: 540px; }
.legend .swatch { display: inline-block; width: 22px; height: 0; vertical-align: middle; margin-right: 6px; }
figcaption { font-size: 0.85em; color: #555; padding: 4px 6px 0; max-width: 60ch; }
table { border-collapse: collapse; background: #fff; font-size: 0.9em; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
.launches td:nth-child(5), .launches td:nth-child(6) { white-space: nowrap; }
.launches td:nth-child(2) { font-family: ui-monospace, monospace; font-size: 0.9em; overflow-wrap: anywhere; min-width: 30ch; }
th { background: #f0f0f0; }
td { font-variant-numeric: tabular-nums; }
.config td:first-child { font-family: ui-monospace, monospace; }
.note { color: #8a5a00; background: #fff8e6; border: 1px solid #f0d9a0; padding: 6px 10px; border-radius: 4px; }
.pairs { display: flex; flex-wrap: wrap; gap: 10px; }
.pair { background: #fff; border: 1px solid #e2e2e2; border-radius: 4px; padding: 6px; font-size: 0.8em; min-width: 214px; }
.pair img { width: 100px; height: 100px; image-rendering: pixelated; border: 1px solid #ccc; }
.pair .caption { color: #555; margin-top: 4px; overflow-wrap: anywhere; }
.pair .when { white-space: nowrap; }
footer { margin-top: 3em; color: #777; font-size: 0.8em; }
"#;

/// The whole document.
pub fn page(title: &str, subtitle: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{t}</h1>\n<p class=\"subtitle\">{}</p>\n{body}<footer>Written by geossl {} on {}.</footer>\n</body>\n</html>\n",
        escape(subtitle),
        env!("CARGO_PKG_VERSION"),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        t = escape(title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_everywhere() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let t = table(&["class"], &[vec!["roads & <bridges>".into()]]);
        assert!(t.contains("<td>roads &amp; &lt;bridges&gt;</td>"), "{t}");
        let p = page("run <1>", "x", "");
        assert!(p.contains("<title>run &lt;1&gt;</title>"));
        assert!(!p.contains("<script"), "the page needs no script");
    }
}
