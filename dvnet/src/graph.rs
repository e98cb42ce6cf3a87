//! `dvnet graph`: the lab as a picture — routers, segments, hosts, addresses, with firewalls,
//! impairments and links taken down marked — as SVG (laid out and drawn here: no Graphviz
//! needed), DOT (for Graphviz) or Mermaid (for Markdown).
//!
//! The picture is a bipartite graph: nodes (routers, hosts) on one side, subnets on the
//! other, a line per link. The SVG layout is layered, left to right: a breadth-first walk
//! from a node at one end of the network (the farthest from the first subnet) gives each
//! router and subnet its column, a host stands beside its subnet (away from its routers), and a few
//! sweeps order each column by the mean position of its neighbours (fewer crossings). Every
//! link's line and label carry the link's id (`link-<id>`, `rate-<id>`), so a page can write
//! live figures next to them (`dvnet ui`).
//!
//! A subnet shows at most [`MAX_HOSTS`] hosts; the rest are one box, "+ N hosts".

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use crate::plan::{NodeKind, Plan, Segment};
use crate::topology::Policy;

/// Hosts drawn per subnet.
pub const MAX_HOSTS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Svg,
    Dot,
    Mermaid,
}

/// A box of the picture.
#[derive(Clone, Debug)]
struct Vertex {
    kind: Kind,
    /// The name shown first.
    name: String,
    /// Smaller lines below it.
    details: Vec<String>,
    /// A mark: a firewall, impairments.
    marked: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Router,
    Host,
    Subnet {
        bridge: bool,
    },
    /// "+ N hosts".
    More,
}

/// A line: a link (its id), or a subnet's hidden hosts.
#[derive(Clone, Debug)]
struct Edge {
    node: usize,
    subnet: usize,
    link: Option<u32>,
    label: String,
    /// Impairments of the link, written.
    impair: String,
    down: bool,
}

/// What is drawn, whatever the format.
struct Picture {
    title: String,
    vertices: Vec<Vertex>,
    edges: Vec<Edge>,
}

impl Picture {
    fn of(plan: &Plan) -> Picture {
        let mut vertices = Vec::new();
        let mut edges = Vec::new();
        let mut subnet_vertex = Vec::new();
        for s in &plan.subnets {
            let mut details = vec![s.label()];
            if !s.impair.is_none() {
                details.push(s.impair.to_string());
            }
            subnet_vertex.push(vertices.len());
            vertices.push(Vertex {
                kind: Kind::Subnet {
                    bridge: matches!(s.segment, Segment::Bridge { .. }),
                },
                name: s.name.clone(),
                details,
                marked: !s.impair.is_none(),
            });
        }
        let mut shown = vec![0usize; plan.subnets.len()];
        let mut hidden = vec![0usize; plan.subnets.len()];
        for node in &plan.nodes {
            let router = node.kind == NodeKind::Router;
            if !router {
                let subnet = plan.links_of(node).next().map(|l| l.subnet);
                if let Some(s) = subnet {
                    if shown[s] >= MAX_HOSTS {
                        hidden[s] += 1;
                        continue;
                    }
                    shown[s] += 1;
                }
            }
            let mut details = Vec::new();
            let mut marked = false;
            if let Some(fw) = node.firewall.as_ref().filter(|f| f.active()) {
                marked = true;
                let drops = fw
                    .rules
                    .iter()
                    .filter(|r| r.action == crate::plan::Action::Drop)
                    .count();
                let accepts = fw.rules.len() - drops;
                let mut fw_line = format!("firewall: {drops} drop");
                if accepts > 0 {
                    let _ = write!(fw_line, ", {accepts} accept");
                }
                fw_line.push_str(match fw.policy {
                    Policy::Accept => ", ACCEPT",
                    Policy::Drop => ", DROP",
                });
                details.push(fw_line);
            }
            if let Some(image) = &node.image {
                details.push(image.clone());
            }
            let v = vertices.len();
            vertices.push(Vertex {
                kind: if router { Kind::Router } else { Kind::Host },
                name: node.name.clone(),
                details,
                marked,
            });
            for link in plan.links_of(node) {
                let mut impair = link.impair.to_string();
                if link.impair.is_none() {
                    impair.clear();
                }
                edges.push(Edge {
                    node: v,
                    subnet: subnet_vertex[link.subnet],
                    link: Some(link.id),
                    label: link.label_address().to_string(),
                    impair,
                    down: link.down,
                });
            }
        }
        for (s, &n) in hidden.iter().enumerate() {
            if n > 0 {
                let v = vertices.len();
                vertices.push(Vertex {
                    kind: Kind::More,
                    name: format!("+ {n} hosts"),
                    details: Vec::new(),
                    marked: false,
                });
                edges.push(Edge {
                    node: v,
                    subnet: subnet_vertex[s],
                    link: None,
                    label: String::new(),
                    impair: String::new(),
                    down: false,
                });
            }
        }
        Picture {
            title: plan.name.clone(),
            vertices,
            edges,
        }
    }

    fn neighbours(&self) -> Vec<Vec<usize>> {
        let mut n = vec![Vec::new(); self.vertices.len()];
        for e in &self.edges {
            n[e.node].push(e.subnet);
            n[e.subnet].push(e.node);
        }
        n
    }
}

/// The picture of `plan` in `format`.
#[must_use]
pub fn render(plan: &Plan, format: Format) -> String {
    let p = Picture::of(plan);
    match format {
        Format::Svg => svg(&p),
        Format::Dot => dot(&p),
        Format::Mermaid => mermaid(&p),
    }
}

fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn dot(p: &Picture) -> String {
    let mut out = format!(
        "graph {} {{\n  graph [rankdir=LR, fontname=\"Helvetica\", label={}, labelloc=t];\n  node [fontname=\"Helvetica\", fontsize=11];\n  edge [fontname=\"Helvetica\", fontsize=9];\n",
        dot_quote(&p.title),
        dot_quote(&p.title)
    );
    for (i, v) in p.vertices.iter().enumerate() {
        let label = std::iter::once(v.name.as_str())
            .chain(v.details.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("\n");
        let style = match v.kind {
            Kind::Router => {
                "shape=box, style=\"rounded,filled\", fillcolor=\"#dbeafe\", color=\"#1d4ed8\""
            }
            Kind::Host => {
                "shape=box, style=\"rounded,filled\", fillcolor=\"#ecfccb\", color=\"#4d7c0f\""
            }
            Kind::Subnet { bridge: true } => {
                "shape=box, style=\"filled\", fillcolor=\"#f3f4f6\", color=\"#6b7280\""
            }
            Kind::Subnet { bridge: false } => {
                "shape=box, style=\"filled,dashed\", fillcolor=\"#f9fafb\", color=\"#6b7280\""
            }
            Kind::More => "shape=plaintext",
        };
        let mark = if v.marked {
            ", penwidth=3, color=\"#dc2626\""
        } else {
            ""
        };
        let _ = writeln!(out, "  v{i} [label={}, {style}{mark}];", dot_quote(&label));
    }
    for e in &p.edges {
        let mut label = e.label.clone();
        if !e.impair.is_empty() {
            label = format!("{label}\n{}", e.impair);
        }
        if e.down {
            label = format!("{label}\ndown");
        }
        let style = if e.down {
            ", style=dotted, color=\"#9ca3af\""
        } else if !e.impair.is_empty() {
            ", color=\"#ea580c\", penwidth=2"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  v{} -- v{} [label={}{style}];",
            e.node,
            e.subnet,
            dot_quote(&label)
        );
    }
    out.push_str("}\n");
    out
}

/// A Mermaid label: quoted, with its quotes and markup written as entities.
fn mermaid_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '#' => out.push_str("#35;"),
            '\n' => out.push_str("<br/>"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn mermaid(p: &Picture) -> String {
    let mut out = format!(
        "---\ntitle: {}\n---\nflowchart LR\n",
        p.title.replace('\n', " ")
    );
    for (i, v) in p.vertices.iter().enumerate() {
        let label = mermaid_quote(
            &std::iter::once(v.name.clone())
                .chain(v.details.iter().cloned())
                .collect::<Vec<_>>()
                .join("\n"),
        );
        let (open, close, class) = match v.kind {
            Kind::Router => ("[", "]", "router"),
            Kind::Host => ("([", "])", "host"),
            Kind::Subnet { .. } => ("{{", "}}", "subnet"),
            Kind::More => ("[", "]", "more"),
        };
        let _ = writeln!(out, "  v{i}{open}{label}{close}:::{class}");
        if v.marked {
            let _ = writeln!(out, "  class v{i} marked");
        }
    }
    for e in &p.edges {
        let mut label = e.label.clone();
        if !e.impair.is_empty() {
            label = format!("{label} {}", e.impair);
        }
        if e.down {
            label.push_str(" down");
        }
        let arrow = if e.down { "-.-" } else { "---" };
        if label.is_empty() {
            let _ = writeln!(out, "  v{} {arrow} v{}", e.node, e.subnet);
        } else {
            let _ = writeln!(
                out,
                "  v{} {arrow}|{}| v{}",
                e.node,
                mermaid_quote(&label),
                e.subnet
            );
        }
    }
    out.push_str(
        "  classDef router fill:#dbeafe,stroke:#1d4ed8\n  classDef host fill:#ecfccb,stroke:#4d7c0f\n  classDef subnet fill:#f3f4f6,stroke:#6b7280\n  classDef more fill:#fff,stroke:#fff\n  classDef marked stroke:#dc2626,stroke-width:3px\n",
    );
    out
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Columns and rows: each vertex's (column, row).
fn layout(p: &Picture) -> Vec<(usize, usize)> {
    let n = p.vertices.len();
    let neighbours = p.neighbours();
    let hostlike = |v: usize| matches!(p.vertices[v].kind, Kind::Host | Kind::More);
    let mut column = vec![usize::MAX; n];
    let bfs = |start: usize, column: &mut Vec<usize>, base: usize| -> Vec<usize> {
        let mut seen = Vec::new();
        let mut queue = VecDeque::from([start]);
        column[start] = base;
        while let Some(v) = queue.pop_front() {
            seen.push(v);
            for &w in &neighbours[v] {
                if column[w] == usize::MAX && !hostlike(w) {
                    column[w] = column[v] + 1;
                    queue.push_back(w);
                }
            }
        }
        seen
    };
    // each connected part of the routers and subnets, from one of its ends
    let mut parts: Vec<Vec<usize>> = Vec::new();
    for start in 0..n {
        if column[start] != usize::MAX || hostlike(start) {
            continue;
        }
        let first = bfs(start, &mut column, 0);
        let far = *first.iter().max_by_key(|&&v| column[v]).unwrap_or(&start);
        for &v in &first {
            column[v] = usize::MAX;
        }
        parts.push(bfs(far, &mut column, 0));
    }
    // hosts: beside their subnet, on the side away from its routers (after it when routers
    // stand on both sides); every column moves one right to leave room on the left
    for c in &mut column {
        if *c != usize::MAX {
            *c += 1;
        }
    }
    for v in 0..n {
        if hostlike(v) {
            column[v] = neighbours[v].first().map_or(1, |&s| {
                let routers_before = neighbours[s]
                    .iter()
                    .any(|&r| !hostlike(r) && column[r] < column[s]);
                if routers_before {
                    column[s] + 1
                } else {
                    column[s] - 1
                }
            });
        }
    }
    let first = column.iter().copied().min().unwrap_or(0);
    for c in &mut column {
        *c -= first;
    }
    // rows: each part below the one before, each column ordered by its neighbours' rows
    let mut position = vec![(0usize, 0usize); n];
    let mut top = 0;
    for part in &parts {
        let mut members: Vec<usize> = part.clone();
        for (v, near) in neighbours.iter().enumerate() {
            if hostlike(v) && near.first().is_some_and(|s| part.contains(s)) {
                members.push(v);
            }
        }
        let mut columns: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &v in &members {
            columns.entry(column[v]).or_default().push(v);
        }
        let mut row: Vec<f64> = vec![0.0; n];
        let place = |columns: &BTreeMap<usize, Vec<usize>>, row: &mut Vec<f64>| {
            for vs in columns.values() {
                for (i, &v) in vs.iter().enumerate() {
                    #[expect(clippy::cast_precision_loss, reason = "a few thousand rows")]
                    {
                        row[v] = i as f64;
                    }
                }
            }
        };
        place(&columns, &mut row);
        let keys: Vec<usize> = columns.keys().copied().collect();
        for sweep in 0..4 {
            let order: Vec<usize> = if sweep % 2 == 0 {
                keys.clone()
            } else {
                keys.iter().rev().copied().collect()
            };
            for c in order {
                let vs = columns.get_mut(&c).expect("a column");
                let mean = |v: usize| -> f64 {
                    let near: Vec<f64> = neighbours[v]
                        .iter()
                        .filter(|&&w| column[w] != c)
                        .map(|&w| row[w])
                        .collect();
                    if near.is_empty() {
                        row[v]
                    } else {
                        #[expect(clippy::cast_precision_loss, reason = "a few neighbours")]
                        let len = near.len() as f64;
                        near.iter().sum::<f64>() / len
                    }
                };
                let mut keyed: Vec<(f64, usize)> = vs.iter().map(|&v| (mean(v), v)).collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                *vs = keyed.into_iter().map(|(_, v)| v).collect();
                for (i, &v) in vs.iter().enumerate() {
                    #[expect(clippy::cast_precision_loss, reason = "a few thousand rows")]
                    {
                        row[v] = i as f64;
                    }
                }
            }
        }
        let height = columns.values().map(Vec::len).max().unwrap_or(1);
        for (&c, vs) in &columns {
            // centred in the part's height
            let offset = (height - vs.len()) / 2;
            for (i, &v) in vs.iter().enumerate() {
                position[v] = (c, top + offset + i);
            }
        }
        top += height + 1;
    }
    position
}

const COLUMN: f64 = 230.0;
const ROW: f64 = 78.0;
const MARGIN: f64 = 40.0;
const CHAR: f64 = 7.0;

fn width_of(v: &Vertex) -> f64 {
    let longest = std::iter::once(&v.name)
        .chain(&v.details)
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0);
    #[expect(clippy::cast_precision_loss, reason = "label lengths")]
    let w = longest as f64 * CHAR + 20.0;
    w.clamp(70.0, COLUMN - 20.0)
}

fn height_of(v: &Vertex) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a few lines")]
    let lines = (1 + v.details.len()) as f64;
    14.0 * lines + 12.0
}

#[expect(
    clippy::many_single_char_names,
    reason = "coordinates and sizes: x, y, w, h as in SVG itself"
)]
fn svg(p: &Picture) -> String {
    let position = layout(p);
    #[expect(clippy::cast_precision_loss, reason = "columns and rows")]
    let centre = |v: usize| {
        let (c, r) = position[v];
        (
            MARGIN + 60.0 + c as f64 * COLUMN,
            MARGIN + 40.0 + r as f64 * ROW,
        )
    };
    let columns = position.iter().map(|&(c, _)| c + 1).max().unwrap_or(1);
    let rows = position.iter().map(|&(_, r)| r + 1).max().unwrap_or(1);
    #[expect(clippy::cast_precision_loss, reason = "columns and rows")]
    let (width, height) = (
        2.0 * MARGIN + columns as f64 * COLUMN,
        2.0 * MARGIN + 40.0 + rows as f64 * ROW,
    );
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n<title>{}</title>\n<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n<text x=\"{MARGIN}\" y=\"{:.0}\" font-size=\"16\" font-weight=\"bold\">{}</text>\n",
        xml(&p.title),
        MARGIN - 10.0,
        xml(&p.title)
    );
    out.push_str("<g class=\"links\">\n");
    for e in &p.edges {
        let ((x1, y1), (x2, y2)) = (centre(e.node), centre(e.subnet));
        let (stroke, extra) = if e.down {
            ("#9ca3af", " stroke-dasharray=\"2 5\"")
        } else if !e.impair.is_empty() {
            ("#ea580c", " stroke-width=\"2.5\"")
        } else {
            ("#6b7280", " stroke-width=\"1.5\"")
        };
        let id = e.link.map_or_else(String::new, |l| {
            format!(" id=\"link-{l}\" data-link=\"{l}\"")
        });
        let _ = writeln!(
            out,
            "<g class=\"link\"{id}><line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"{stroke}\"{extra}/>"
        );
        // the address near the node, the rest at the middle
        let (lx, ly) = (x1 + (x2 - x1) * 0.3, y1 + (y2 - y1) * 0.3 - 4.0);
        if !e.label.is_empty() {
            let _ = writeln!(
                out,
                "<text x=\"{lx:.1}\" y=\"{ly:.1}\" font-size=\"10\" fill=\"#374151\" text-anchor=\"middle\">{}</text>",
                xml(&e.label)
            );
        }
        let (mx, my) = (f64::midpoint(x1, x2), f64::midpoint(y1, y2));
        let mut notes = Vec::new();
        if !e.impair.is_empty() {
            notes.push(e.impair.clone());
        }
        if e.down {
            notes.push("down".to_owned());
        }
        if !notes.is_empty() {
            let _ = writeln!(
                out,
                "<text x=\"{mx:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"{stroke}\" text-anchor=\"middle\">{}</text>",
                my + 12.0,
                xml(&notes.join(", "))
            );
        }
        if let Some(l) = e.link {
            let _ = writeln!(
                out,
                "<text class=\"rate\" id=\"rate-{l}\" x=\"{mx:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#1d4ed8\" text-anchor=\"middle\"></text>",
                my + 24.0
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str("</g>\n<g class=\"vertices\">\n");
    for (i, v) in p.vertices.iter().enumerate() {
        let (x, y) = centre(i);
        let (w, h) = (width_of(v), height_of(v));
        let (fill, stroke, rx, dash, class) = match v.kind {
            Kind::Router => ("#dbeafe", "#1d4ed8", 6.0, "", "router"),
            Kind::Host => ("#ecfccb", "#4d7c0f", 14.0, "", "host"),
            Kind::Subnet { bridge: true } => ("#f3f4f6", "#6b7280", 2.0, "", "subnet"),
            Kind::Subnet { bridge: false } => (
                "#f9fafb",
                "#6b7280",
                2.0,
                " stroke-dasharray=\"4 3\"",
                "subnet",
            ),
            Kind::More => (
                "#ffffff",
                "#d1d5db",
                2.0,
                " stroke-dasharray=\"2 2\"",
                "more",
            ),
        };
        let (stroke, sw) = if v.marked {
            (
                if matches!(v.kind, Kind::Subnet { .. }) {
                    "#ea580c"
                } else {
                    "#dc2626"
                },
                3.0,
            )
        } else {
            (stroke, 1.5)
        };
        let _ = writeln!(
            out,
            "<g class=\"{class}\" id=\"{}-{}\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"{rx}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{sw}\"{dash}/>",
            if matches!(v.kind, Kind::Subnet { .. }) {
                "subnet"
            } else {
                "node"
            },
            xml(&v.name),
            x - w / 2.0,
            y - h / 2.0
        );
        let mut ty = y - h / 2.0 + 18.0;
        let _ = writeln!(
            out,
            "<text x=\"{x:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>",
            xml(&v.name)
        );
        for d in &v.details {
            ty += 14.0;
            let _ = writeln!(
                out,
                "<text x=\"{x:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\" font-size=\"10\" fill=\"#374151\">{}</text>",
                xml(d)
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str("</g>\n</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Datapath, PlanOptions};
    use crate::topology::Topology;

    fn classic() -> Plan {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/classic.json");
        Plan::build(
            &Topology::from_file(&path).unwrap(),
            PlanOptions {
                datapath: Datapath::Ebpf,
                ..PlanOptions::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn every_format_names_every_node_subnet_and_address() {
        let plan = classic();
        for format in [Format::Svg, Format::Dot, Format::Mermaid] {
            let out = render(&plan, format);
            for n in &plan.nodes {
                assert!(out.contains(&n.name), "{format:?} lacks {}", n.name);
            }
            for s in &plan.subnets {
                assert!(out.contains(&s.label()), "{format:?} lacks {}", s.label());
            }
            for l in &plan.links {
                let address = l.label_address().to_string();
                assert!(out.contains(&address), "{format:?} lacks {address}");
            }
            assert!(out.contains("firewall: 1 drop, ACCEPT"), "{format:?}");
        }
    }

    #[test]
    fn names_are_escaped_in_each_language() {
        let mut plan = classic();
        plan.nodes[0].name = "R<\"&'>".into();
        let svg = render(&plan, Format::Svg);
        assert!(svg.contains("R&lt;&quot;&amp;&#39;&gt;"));
        assert!(!svg.contains("R<\""));
        let dot = render(&plan, Format::Dot);
        assert!(dot.contains(r#""R<\"&'>"#));
        let mermaid = render(&plan, Format::Mermaid);
        assert!(mermaid.contains("R#lt;#quot;&'#gt;"));
    }

    #[test]
    fn a_crowded_subnet_shows_a_few_hosts_and_counts_the_rest() {
        let hosts: serde_json::Map<String, serde_json::Value> = (0..50)
            .map(|i| (format!("h{i}"), serde_json::json!({})))
            .collect();
        let topo = serde_json::json!({
            "name": "crowd",
            "subnets": {"L": {"cidr": "10.1.0.0/24", "hosts": hosts}}
        });
        let plan = Plan::build(
            &Topology::from_json(&topo.to_string(), "crowd.json").unwrap(),
            PlanOptions::default(),
        )
        .unwrap();
        let svg = render(&plan, Format::Svg);
        assert!(svg.contains("+ 42 hosts"));
        assert_eq!(svg.matches("class=\"host\"").count(), MAX_HOSTS);
    }

    #[test]
    fn a_chain_is_laid_out_left_to_right_one_column_per_hop() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chain10.json"),
        )
        .unwrap();
        let plan = Plan::build(
            &Topology::from_json(&text, "chain10.json").unwrap(),
            PlanOptions::default(),
        )
        .unwrap();
        let p = Picture::of(&plan);
        let pos = layout(&p);
        let routers: Vec<usize> = p
            .vertices
            .iter()
            .enumerate()
            .filter(|(_, v)| v.kind == Kind::Router)
            .map(|(i, _)| pos[i].0)
            .collect();
        let mut sorted = routers.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), routers.len(), "a column each: {routers:?}");
    }
}
