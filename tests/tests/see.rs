//! Tier 3: seeing the network — `dvnet graph` (SVG read back as XML, DOT through Graphviz's
//! `dot`, Mermaid) and `dvnet ui`, its page loaded in a real headless browser (Debian's
//! chromium) while traffic runs.
//!
//! The lab: A (A-1, A-2: a bridge) — R-1 — C — R-2 — B (B-1); R-1 drops A-2 → B.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use dvnet_tests::{TestNet, dvnet_bin, lab_with_a_drop_rule as lab, require_root, tapped, text};
use serde_json::Value;

const NAMES: [&str; 8] = ["R-1", "R-2", "A-1", "A-2", "B-1", "A", "B", "C"];

fn graph(net: &TestNet, of: &str, format: &str) -> String {
    let out = net.host.dvnet(&["graph", of, "--format", format]);
    assert!(out.status.success(), "dvnet graph: {}", text(&out));
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Every text of an SVG document, which must be well-formed XML with an `svg` root.
fn svg_texts(svg: &str) -> Vec<String> {
    // Graphviz writes a DOCTYPE
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, options)
        .unwrap_or_else(|e| panic!("not XML: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(str::to_owned))
        .collect()
}

#[test]
fn graph_draws_a_file_in_svg_dot_and_mermaid() {
    if !require_root("graph_draws_a_file_in_svg_dot_and_mermaid") {
        return;
    }
    let net = TestNet::new("graph", lab());
    let file = net.file.to_str().unwrap().to_owned();
    // SVG, drawn by dvnet: every node, subnet and address written
    let texts = svg_texts(&graph(&net, &file, "svg"));
    for name in NAMES {
        assert!(texts.iter().any(|t| t == name), "{name} missing: {texts:?}");
    }
    for addr in [
        "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.2.1", "10.0.2.2", "10.0.1.2",
    ] {
        assert!(texts.iter().any(|t| t == addr), "{addr} missing: {texts:?}");
    }
    assert!(
        texts.iter().any(|t| t == "firewall: 1 drop, ACCEPT"),
        "{texts:?}"
    );
    // DOT: Graphviz accepts it and draws the same names
    let mut dot = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dot (./setup.sh installs graphviz)");
    std::io::Write::write_all(
        dot.stdin.as_mut().unwrap(),
        graph(&net, &file, "dot").as_bytes(),
    )
    .unwrap();
    let drawn = dot.wait_with_output().unwrap();
    assert!(drawn.status.success(), "dot refused it: {}", text(&drawn));
    let texts = svg_texts(&String::from_utf8_lossy(&drawn.stdout));
    for name in NAMES {
        assert!(
            texts.iter().any(|t| t == name),
            "dot's drawing lacks {name}: {texts:?}"
        );
    }
    // Mermaid: a flowchart, a vertex per node and subnet, a line per link
    let mermaid = graph(&net, &file, "mermaid");
    let lines: Vec<&str> = mermaid.lines().collect();
    assert_eq!(
        &lines[..4],
        ["---", &format!("title: {}", net.id), "---", "flowchart LR"]
    );
    let vertices = lines
        .iter()
        .filter(|l| l.trim_start().starts_with('v') && !l.contains("---"))
        .count();
    assert_eq!(vertices, 8, "{mermaid}");
    assert_eq!(
        lines.iter().filter(|l| l.contains("---|")).count(),
        7,
        "{mermaid}"
    );
    for name in NAMES {
        assert!(mermaid.contains(&format!("\"{name}")), "{name}: {mermaid}");
    }
}

#[test]
fn graph_of_a_running_network_marks_impairments_and_links_down() {
    if !require_root("graph_of_a_running_network_marks_impairments_and_links_down") {
        return;
    }
    let net = TestNet::new("graph-live", lab());
    net.up(&[]);
    let out = net
        .host
        .dvnet(&["impair", &net.id, "C", "--node", "R-1", "loss=5%"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = net.host.dvnet(&["link", &net.id, "R-2", "B", "down"]);
    assert!(out.status.success(), "{}", text(&out));
    let svg = graph(&net, &net.id, "svg");
    let texts = svg_texts(&svg);
    assert!(texts.iter().any(|t| t == "loss=5%"), "{texts:?}");
    assert!(texts.iter().any(|t| t == "down"), "{texts:?}");
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let line_of = |node: &str, subnet: &str| {
        let stats = net.host.dvnet(&["stats", &net.id, "--json"]);
        let v: Value = serde_json::from_slice(&stats.stdout).unwrap();
        let id = v["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["node"] == node && l["subnet"] == subnet)
            .unwrap()["link"]
            .as_u64()
            .unwrap();
        let g = doc
            .descendants()
            .find(|n| n.attribute("id") == Some(&format!("link-{id}")))
            .unwrap_or_else(|| panic!("no link-{id}"));
        g.children().find(|c| c.has_tag_name("line")).unwrap()
    };
    assert_eq!(line_of("R-1", "C").attribute("stroke"), Some("#ea580c"));
    assert!(line_of("R-2", "B").attribute("stroke-dasharray").is_some());
    assert!(line_of("A-1", "A").attribute("stroke-dasharray").is_none());
}

/// A running `dvnet ui`, and the address it serves on.
struct Ui {
    child: Child,
    url: String,
}

impl Ui {
    fn start(net: &TestNet) -> Ui {
        let mut child = net
            .host
            .command(dvnet_bin())
            .args(["ui", &net.id, "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dvnet ui");
        let mut line = String::new();
        BufReader::new(child.stderr.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Ui { child, url }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromium, headless, in the fake host (where the page is served): its arguments, then the
/// URL; what it printed.
fn chromium(net: &TestNet, args: &[&str], url: &str) -> String {
    let out = net
        .host
        .command("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--virtual-time-budget=2500",
        ])
        .args(args)
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .expect("chromium (./setup.sh installs it)");
    assert!(out.status.success(), "chromium: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number in the element `id` of a page's DOM.
fn number(dom: &str, id: &str) -> u64 {
    let at = dom
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    dom[at..]
        .split_once('>')
        .unwrap()
        .1
        .split('<')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
}

#[test]
fn the_page_shows_every_node_and_its_counters_move_while_a_ping_runs() {
    if !require_root("the_page_shows_every_node_and_its_counters_move_while_a_ping_runs") {
        return;
    }
    let net = TestNet::new("ui", lab());
    net.up(&[]);
    assert!(net.ping("A-1", "10.0.1.2"));
    let ui = Ui::start(&net);
    assert!(
        dvnet_tests::eventually(2, || tapped(&net) > 0),
        "the page's capture of drops taps the links"
    );
    // pings, 20 a second, for as long as the page is looked at (chromium takes seconds to
    // start on a loaded machine): stopped below, by its pid
    let mut ping = net
        .host
        .command(dvnet_bin())
        .args([
            "exec", &net.id, "A-1", "--", "ping", "-q", "-c", "1200", "-i", "0.05",
        ])
        .arg("10.0.1.2")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let first = chromium(&net, &["--dump-dom"], &ui.url);
    for name in NAMES {
        assert!(
            first.contains(&format!(">{name}</text>")),
            "{name} is not on the page"
        );
    }
    let before = number(&first, "total-packets");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let second = chromium(&net, &["--dump-dom"], &ui.url);
    let after = number(&second, "total-packets");
    assert!(after > before + 20, "counters move: {before} then {after}");
    // R-1's link on A carries the requests in and the replies out: a rate by its line
    let stats: Value =
        serde_json::from_slice(&net.host.dvnet(&["stats", &net.id, "--json"]).stdout).unwrap();
    let r1a = stats["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["node"] == "R-1" && l["subnet"] == "A")
        .unwrap()["link"]
        .as_u64()
        .unwrap();
    let rate = second
        .split(&format!("id=\"rate-{r1a}\""))
        .nth(1)
        .and_then(|rest| rest.split_once('>'))
        .map(|(_, t)| t.split('<').next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let pps: f64 = rate
        .strip_suffix(" pkt/s")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rate by R-1:A's line: {rate:?}"));
    // 40 a second at most (a request and a reply each 50 ms; the server's one-second window
    // may straddle the start, and a loaded machine sends late), none without the ping
    assert!(
        (4.0..=60.0).contains(&pps),
        "up to 40 pkt/s expected, and more than none: {pps}"
    );
    // our own child, by its pid (dvnet exec execs ping in its place)
    let _ = ping.kill();
    let _ = ping.wait();

    // a drop, shown with its verdict when its link is chosen
    assert!(!net.ping("A-2", "10.0.1.2"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let dom = chromium(&net, &["--dump-dom"], &format!("{}#link={r1a}", ui.url));
    assert!(dom.contains("Last drops on R-1:A"), "the link is chosen");
    assert!(
        dom.contains("dropped by R-1: fw-rule routers.\"R-1\".fw_rules.drop[0]")
            || dom.contains("dropped by R-1: fw-rule routers.&quot;R-1&quot;.fw_rules.drop[0]"),
        "the drop and its rule are shown"
    );
    // a picture of it
    let shot = net.dir.path().join("ui.png");
    chromium(
        &net,
        &[
            "--hide-scrollbars",
            "--window-size=1400,740",
            &format!("--screenshot={}", shot.display()),
        ],
        &ui.url,
    );
    let image = std::fs::read(&shot).expect("a screenshot");
    assert!(image.starts_with(b"\x89PNG") && image.len() > 10_000);

    // read-only
    let out = net
        .host
        .command("bash")
        .arg("-c")
        .arg(format!(
            "exec 3<>/dev/tcp/{}; printf 'POST /api/stats HTTP/1.0\\r\\n\\r\\n' >&3; head -1 <&3",
            ui.url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .replace(':', "/")
        ))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("405"),
        "{}",
        text(&out)
    );
    // Ctrl-C: the page stops, its capture untaps
    let mut ui = ui;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(ui.child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    assert!(ui.child.wait().unwrap().success());
    assert_eq!(tapped(&net), 0);
}
