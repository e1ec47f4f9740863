//! The report as one self-contained HTML page with the SVG plots inline.

use super::markdown::{cells, HEADERS};
use super::{verdict, Summary};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `**bold**` spans of the verdict as <b>.
fn bold(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in escape(s).split("**").enumerate() {
        if i % 2 == 1 {
            out.push_str(&format!("<b>{part}</b>"));
        } else {
            out.push_str(part);
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1360px;color:#222;padding:0 1em}\
h1{font-size:1.6em}h2{font-size:1.1em;margin:1.2em 0 .4em}\
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:12px;width:100%}\
th,td{border-bottom:1px solid #ddd;padding:4px 5px;text-align:right;white-space:nowrap;vertical-align:top}\
th{background:#f3f4f6;white-space:normal}td:nth-child(1),th:nth-child(1){text-align:left;font-weight:600}\
td:nth-child(2),th:nth-child(2),td:last-child,th:last-child{text-align:left;white-space:normal;min-width:140px;max-width:240px}\
tr:hover td{background:#fafafa}\
.verdict{background:#eef6ff;border-left:4px solid #3b82f6;padding:.6em 1em}\
.plots{display:flex;flex-wrap:wrap;gap:16px}.plots figure{margin:0}\
.meta,.note{color:#555;font-size:13px}.note code{word-break:break-all}\
.warn{background:#fff4e5;border-left:4px solid #f59e0b;padding:.6em 1em}";

/// The whole report; `plots` are (title, SVG text) pairs.
pub fn html(s: &Summary, plots: &[(String, String)]) -> String {
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>leanlm run: {0}</title>\
         <style>{STYLE}</style></head><body><h1>leanlm run: {0}</h1>",
        escape(&s.recipe)
    );
    if !s.description.is_empty() {
        out.push_str(&format!("<p>{}</p>", escape(&s.description)));
    }
    out.push_str(&format!(
        "<p class=\"meta\">Run folder <code>{}</code> · leanlm commit {} · {} threads · every figure measured in this run</p>",
        escape(&s.run_dir),
        escape(s.git_commit.as_deref().unwrap_or("unknown")),
        s.threads
    ));
    if let Some(n) = &s.note {
        out.push_str(&format!("<p class=\"warn\">{}</p>", escape(n)));
    }
    out.push_str(&format!("<p class=\"verdict\">{}</p>", bold(&verdict(s))));
    out.push_str("<div class=\"scroll\"><table><thead><tr>");
    for h in HEADERS {
        out.push_str(&format!("<th>{}</th>", escape(h)));
    }
    out.push_str("</tr></thead><tbody>");
    for r in &s.rows {
        out.push_str("<tr>");
        for c in cells(&s.rows, r) {
            out.push_str(&format!("<td>{}</td>", escape(&c)));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    if let Some(p) = &s.pair {
        out.push_str(&format!("<p>{}</p>", escape(&p.sentence())));
    }
    out.push_str(&format!(
        "<p class=\"note\">PPL: WikiText-2 perplexity (llama.cpp protocol) ± one standard error. KLD: mean KL \
         divergence from the original's next-token distribution on the same tokens. tg ×, PPL ×: relative to \
         the first row. Speeds: median of the bench repetitions. Settings: <code>{}</code></p>",
        escape(&s.eval.to_string())
    ));
    out.push_str("<div class=\"plots\">");
    for (title, svg) in plots {
        out.push_str(&format!("<figure><h2>{}</h2>{svg}</figure>", escape(title)));
    }
    out.push_str("</div></body></html>\n");
    out
}
