//! Reports people open instead of a notebook: the model evaluation (`train`, `fidelis
//! report`) and the weekly page (`weekly`, `fidelis report --weekly`).
//!
//! Each report is written three ways from one [`Doc`]: a self-contained HTML file (inline
//! CSS, inline SVG charts, no script, no network request), Markdown (charts as SVG files in
//! `charts/` beside it, so it reads on GitHub), and JSON with the numbers (for whoever wants
//! to chart or test them). Files are written to a temporary name and renamed.

pub mod chart;
pub mod evaluation;
pub mod kpi;
pub mod renewals;
pub mod survival;
pub mod uplift;
pub mod weekly;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::files;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Cells that read as numbers are right-aligned.
fn is_number(s: &str) -> bool {
    let t = s.trim_start_matches(['+', '-']).trim_end_matches('%');
    !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == ',' || c == '.' || c == '/' || c == ' ')
}

/// Text as Markdown shows it literally: `<`, `>` and `&` as entities (Markdown renderers
/// pass raw HTML through, and customer ids, event names and file paths are data).
fn md_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn md_cell(s: &str) -> String {
    md_text(s).replace('|', "\\|").replace('\n', " ")
}

/// How a table cell is aligned and styled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
}

/// One document, rendered as HTML and Markdown at once.
pub struct Doc {
    title: String,
    html: String,
    md: String,
    toc: Vec<(String, String)>,
    charts: Vec<(String, String)>,
}

impl Doc {
    pub fn new(title: &str, subtitle: &str) -> Doc {
        let mut d =
            Doc { title: title.into(), html: String::new(), md: String::new(), toc: vec![], charts: vec![] };
        let _ = writeln!(
            d.html,
            "<header><h1>{}</h1><p class=\"sub\">{}</p></header>",
            escape(title),
            escape(subtitle)
        );
        let _ = writeln!(d.md, "# {}\n\n{}\n", md_text(title), md_text(subtitle));
        d
    }

    pub fn section(&mut self, id: &str, title: &str) {
        self.toc.push((id.into(), title.into()));
        let _ = writeln!(self.html, "<h2 id=\"{id}\">{}</h2>", escape(title));
        let _ = writeln!(self.md, "## {}\n", md_text(title));
    }

    pub fn para(&mut self, text: &str) {
        let _ = writeln!(self.html, "<p>{}</p>", escape(text));
        let _ = writeln!(self.md, "{}\n", md_text(text));
    }

    /// The one-line plain-language reading of a chart or table.
    pub fn reading(&mut self, text: &str) {
        let _ = writeln!(self.html, "<p class=\"reading\">{}</p>", escape(text));
        let _ = writeln!(self.md, "> {}\n", md_text(text));
    }

    /// A formula shown as code.
    pub fn formula(&mut self, text: &str) {
        let _ = writeln!(self.html, "<p class=\"formula\"><code>{}</code></p>", escape(text));
        let _ = writeln!(self.md, "`{text}`\n");
    }

    pub fn alert(&mut self, text: &str, tone: Tone) {
        let class = match tone {
            Tone::Bad => "alert bad",
            Tone::Warn => "alert warn",
            Tone::Good => "alert good",
            Tone::Plain => "alert",
        };
        let _ = writeln!(self.html, "<p class=\"{class}\">{}</p>", escape(text));
        let mark = match tone {
            Tone::Bad => "**ALERT** ",
            Tone::Warn => "**warning** ",
            _ => "",
        };
        let _ = writeln!(self.md, "{mark}{}\n", md_text(text));
    }

    /// An inline SVG chart (`name` is the Markdown file name under `charts/`) with its
    /// reading below.
    pub fn chart(&mut self, name: &str, svg: String, reading: &str) {
        let inline = svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
        let _ = writeln!(self.html, "<figure>{inline}<figcaption>{}</figcaption></figure>", escape(reading));
        let _ = writeln!(self.md, "![{name}](charts/{name}.svg)\n\n> {}\n", md_text(reading));
        self.charts.push((name.into(), svg));
    }

    /// A table; `tones` (optional, same shape as `rows`) colours cells.
    pub fn table(&mut self, headers: &[&str], rows: &[Vec<String>], tones: Option<&[Vec<Tone>]>) {
        let _ = write!(self.html, "<table><thead><tr>");
        for h in headers {
            let _ = write!(self.html, "<th>{}</th>", escape(h));
        }
        let _ = writeln!(self.html, "</tr></thead><tbody>");
        for (r, row) in rows.iter().enumerate() {
            let _ = write!(self.html, "<tr>");
            for (c, cell) in row.iter().enumerate() {
                let tone =
                    tones.and_then(|t| t.get(r)).and_then(|t| t.get(c)).copied().unwrap_or(Tone::Plain);
                let mut classes = Vec::new();
                if is_number(cell) {
                    classes.push("num");
                }
                match tone {
                    Tone::Plain => {}
                    Tone::Good => classes.push("good"),
                    Tone::Warn => classes.push("warn"),
                    Tone::Bad => classes.push("bad"),
                }
                let class = if classes.is_empty() {
                    String::new()
                } else {
                    format!(" class=\"{}\"", classes.join(" "))
                };
                let _ = write!(self.html, "<td{class}>{}</td>", escape(cell));
            }
            let _ = writeln!(self.html, "</tr>");
        }
        let _ = writeln!(self.html, "</tbody></table>");
        let _ =
            writeln!(self.md, "| {} |", headers.iter().map(|h| md_cell(h)).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(self.md, "|{}", "---|".repeat(headers.len()));
        for row in rows {
            let _ =
                writeln!(self.md, "| {} |", row.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | "));
        }
        self.md.push('\n');
    }

    /// The HTML page: one file, inline CSS, no script, nothing fetched.
    pub fn html(&self) -> String {
        let mut toc = String::new();
        for (id, t) in &self.toc {
            let _ = write!(toc, "<a href=\"#{id}\">{}</a>", escape(t));
        }
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<nav>{toc}</nav>\n<main>\n{}</main>\n\
             <footer>fidelis {}</footer>\n</body>\n</html>\n",
            escape(&self.title),
            self.html,
            env!("CARGO_PKG_VERSION")
        )
    }

    pub fn markdown(&self) -> &str {
        &self.md
    }

    pub fn charts(&self) -> &[(String, String)] {
        &self.charts
    }
}

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
nav{position:sticky;top:0;background:#1d2330;padding:8px 24px;display:flex;flex-wrap:wrap;gap:14px;z-index:1}\
nav a{color:#cfe3ff;text-decoration:none;font-size:13px}\
main{max-width:1040px;margin:0 auto;padding:8px 24px 40px}\
header h1{margin:24px 0 4px;font-size:26px}.sub{color:#5a6372;margin:0 0 12px}\
h2{margin-top:36px;border-bottom:2px solid #dde2ea;padding-bottom:4px;font-size:20px}\
figure{background:#fff;border:1px solid #dde2ea;border-radius:6px;margin:12px 0;padding:8px;display:inline-block;max-width:100%}\
figure svg{max-width:100%;height:auto}\
figcaption,.reading{font-size:14px;color:#2f3a4d;margin:6px 4px}.reading{font-style:italic}\
table{border-collapse:collapse;background:#fff;margin:10px 0;font-size:13px}\
th,td{border:1px solid #dde2ea;padding:4px 8px;text-align:left;vertical-align:top}th{background:#eef1f5}\
td.num{text-align:right;white-space:nowrap}\
td.good{background:#e3f4e8}td.warn{background:#fff3d6}td.bad{background:#fde2e1}\
.alert{padding:8px 12px;border-radius:4px;background:#eef1f5}.alert.bad{background:#fde2e1}\
.alert.warn{background:#fff3d6}.alert.good{background:#e3f4e8}\
.formula code{background:#eef1f5;padding:2px 6px;border-radius:3px}\
footer{color:#8a93a3;font-size:12px;text-align:center;padding:20px}";

/// Write `<dir>/<stem>.html`, `.md`, `.json` and `<dir>/charts/*.svg` (each atomically).
/// Returns the HTML path.
pub fn write(dir: &Path, stem: &str, doc: &Doc, json: &impl Serialize) -> Result<PathBuf> {
    std::fs::create_dir_all(dir.join("charts")).map_err(|e| Error::output(dir, e))?;
    for (name, svg) in doc.charts() {
        let prefixed = if stem == "evaluation" { name.clone() } else { format!("{stem}-{name}") };
        files::write_atomic(&dir.join("charts").join(format!("{prefixed}.svg")), svg.as_bytes())?;
    }
    let md = if stem == "evaluation" {
        doc.markdown().to_string()
    } else {
        doc.markdown().replace("](charts/", &format!("](charts/{stem}-"))
    };
    let html_path = dir.join(format!("{stem}.html"));
    files::write_atomic(&html_path, doc.html().as_bytes())?;
    files::write_atomic(&dir.join(format!("{stem}.md")), md.as_bytes())?;
    files::write_atomic(
        &dir.join(format!("{stem}.json")),
        &files::to_json_bytes(json, &format!("{stem}.json"))?,
    )?;
    Ok(html_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_escapes_and_renders_both_ways() {
        let mut d = Doc::new("T <1>", "sub");
        d.section("a", "A & B");
        d.table(&["x", "y|z"], &[vec!["<b>".into(), "1".into()]], None);
        let html = d.html();
        assert!(html.contains("<h2 id=\"a\">A &amp; B</h2>"));
        assert!(html.contains("<td>&lt;b&gt;</td>"));
        assert!(d.markdown().contains("| x | y\\|z |"));
        // Data never becomes markup in the Markdown either.
        assert!(d.markdown().contains("| &lt;b&gt; | 1 |") && d.markdown().contains("## A &amp; B"));
    }
}
