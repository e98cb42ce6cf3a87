//! Tier 3: dvnet as Docker's network driver, driven by the real `docker` CLI against the real
//! daemon: `docker network create --driver …` builds a lab, containers `docker run` on a
//! subnet network become hosts of the lab, `docker network rm` leaves nothing.
//!
//! The plugin has to run where dockerd runs (dockerd moves the interface the plugin makes
//! into each container it joins), so this is the one place a test's dvnet works in the
//! machine's own namespace; what it builds there is only that interface, for the moment
//! before Docker moves it. The labs have no outbound access. Each test serves its own
//! driver (a unique name: its own socket and store), removes its networks and containers
//! and stops its plugin (by its pid) at the end, pass or fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use dvnet_tests::{dvnet_bin, eventually, leftovers_of, require_docker, text, unique};
use serde_json::{Value, json};

/// A plugin of the test's own, and everything the test makes through it.
struct Driver {
    name: String,
    socket: PathBuf,
    plugin: Option<Child>,
    log: PathBuf,
    dir: tempfile::TempDir,
    networks: Vec<String>,
    containers: Vec<String>,
    labs: Vec<String>,
}

impl Driver {
    fn start(tag: &str) -> Driver {
        let name = unique(tag);
        let dir = tempfile::tempdir().expect("temp dir");
        let mut d = Driver {
            socket: PathBuf::from(format!("/run/docker/plugins/{name}.sock")),
            log: dir.path().join("plugin.log"),
            name,
            plugin: None,
            dir,
            networks: Vec::new(),
            containers: Vec::new(),
            labs: Vec::new(),
        };
        d.serve();
        d
    }

    /// Starts (or restarts) the plugin on the driver's socket.
    fn serve(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the plugin's log");
        let mut cmd = Command::new(dvnet_bin());
        if let Some(host) = daemon_host() {
            cmd.env("DOCKER_HOST", host);
        }
        let child = cmd
            .args(["plugin", "-v", "--socket"])
            .arg(&self.socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dvnet plugin");
        self.plugin = Some(child);
        assert!(
            eventually(10, || std::os::unix::net::UnixStream::connect(&self.socket)
                .is_ok()),
            "the plugin serves on {}: {}",
            self.socket.display(),
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the plugin: SIGKILL (`hard`, a crash) or SIGTERM; waits for it.
    fn stop(&mut self, hard: bool) {
        if let Some(mut child) = self.plugin.take() {
            let signal = if hard {
                nix::sys::signal::Signal::SIGKILL
            } else {
                nix::sys::signal::Signal::SIGTERM
            };
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, signal);
            let _ = child.wait();
        }
    }

    /// Writes `topology` (named `lab`) to a file and creates the lab network `lab` from it.
    fn create_lab(&mut self, lab: &str, topology: &Value, extra: &[&str]) -> Output {
        let file = self.file(lab, topology);
        self.labs.push(lab.to_owned());
        let opt = format!("net.dvnet.def={}", file.display());
        let mut args = vec!["--opt", opt.as_str()];
        args.extend_from_slice(extra);
        self.create_network(lab, &args)
    }

    fn file(&self, lab: &str, topology: &Value) -> PathBuf {
        let mut topology = topology.clone();
        topology["name"] = json!(lab);
        let file = self.dir.path().join(format!("{lab}.json"));
        std::fs::write(&file, serde_json::to_string_pretty(&topology).unwrap()).unwrap();
        file
    }

    /// A Docker network of `lab`'s `subnet` (dvnet picks the addresses), named uniquely; its
    /// name.
    fn attach(&mut self, lab: &str, subnet: &str) -> String {
        let network = unique(subnet);
        ok(
            &self.create_network(
                &network,
                &[
                    "--ipam-driver",
                    "null",
                    "--opt",
                    &format!("net.dvnet.attach={lab}/{subnet}"),
                ],
            ),
            &format!("docker network create (subnet {subnet})"),
        );
        network
    }

    /// `docker network create --driver NAME ARGS... network`.
    fn create_network(&mut self, network: &str, args: &[&str]) -> Output {
        self.networks.push(network.to_owned());
        docker(
            &[
                &["network", "create", "--driver", &self.name],
                args,
                &[network],
            ]
            .concat(),
        )
    }

    /// `docker run -d --name NAME --network NETWORK ARGS... dvnet/host sleep 600`.
    fn run(&mut self, name: &str, network: &str, args: &[&str]) -> Output {
        self.containers.push(name.to_owned());
        docker(
            &[
                &[
                    "run",
                    "-d",
                    "--stop-timeout",
                    "1",
                    "--name",
                    name,
                    "--network",
                    network,
                ],
                args,
                &["dvnet/host", "sleep", "600"],
            ]
            .concat(),
        )
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.plugin.is_none() {
            self.serve();
        }
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for n in self.networks.iter().rev() {
            let _ = docker(&["network", "rm", n]);
        }
        self.stop(false);
        // a lab the plugin could not remove
        for lab in &self.labs {
            let _ = Command::new(dvnet_bin()).args(["down", lab]).output();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

thread_local! {
    /// The daemon this test (its thread) talks to: the machine's, or one it started.
    static DAEMON: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn daemon_host() -> Option<String> {
    DAEMON.with(|d| d.borrow().clone())
}

fn docker(args: &[&str]) -> Output {
    let mut cmd = Command::new("docker");
    if let Some(host) = daemon_host() {
        cmd.args(["-H", &host]);
    }
    cmd.args(args).output().expect("the docker CLI")
}

/// A dockerd of the test's own (its own data, sockets and namespaces; the host's
/// firewall, forwarding and links untouched), so that the test may restart it. Stopped by
/// its pid when dropped.
struct Daemon {
    dir: tempfile::TempDir,
    host: String,
    flags: Vec<String>,
    child: Option<Child>,
}

impl Daemon {
    fn start(flags: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let host = format!("unix://{}/docker.sock", dir.path().display());
        let mut d = Daemon {
            dir,
            host,
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            child: None,
        };
        d.run();
        DAEMON.with(|h| *h.borrow_mut() = Some(d.host.clone()));
        d
    }

    fn run(&mut self) {
        let root = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .args(["-H", &self.host])
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--bridge=none",
            ])
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd");
        self.child = Some(child);
        let host = self.host.clone();
        assert!(
            eventually(20, || Command::new("docker")
                .args(["-H", &host, "version"])
                .output()
                .is_ok_and(|o| o.status.success())),
            "the test's dockerd answers: {}",
            std::fs::read_to_string(root.join("dockerd.log")).unwrap_or_default()
        );
    }

    /// Copies `images` from the machine's daemon.
    fn load(&self, images: &[&str]) {
        let mut save = Command::new("docker")
            .env_remove("DOCKER_HOST")
            .arg("save")
            .args(images)
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let out = Command::new("docker")
            .args(["-H", &self.host, "load", "-q"])
            .stdin(save.stdout.take().unwrap())
            .output()
            .unwrap();
        let saved = save.wait().expect("docker save");
        assert!(saved.success(), "docker save {images:?}: {saved}");
        assert!(out.status.success(), "docker load: {}", text(&out));
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        DAEMON.with(|h| *h.borrow_mut() = None);
        // dockerd may leave its data root mounted over itself
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut inside: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in inside {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", text(out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn ping(container: &str, target: &str) -> bool {
    docker(&["exec", container, "ping", "-c", "1", "-W", "2", target])
        .status
        .success()
}

fn containers_of(id: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=org.dvnet.network={id}"),
        "--format",
        "{{.Names}}",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The interfaces of joined containers (`nodes`, `c-…`) the machine's own namespace still
/// has: each waits there (`dvc…`) until Docker moves it in, and comes back when it leaves.
fn interfaces_left(nodes: &[&String]) -> Vec<String> {
    let out = Command::new("ip").args(["-br", "link"]).output().unwrap();
    let names: Vec<String> = nodes
        .iter()
        .map(|n| format!("dvc{}", n.trim_start_matches("c-")))
        .collect();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(['@', ' ']).next())
        .filter(|n| names.iter().any(|m| m == n))
        .map(str::to_owned)
        .collect()
}

fn dvnet(args: &[&str]) -> Output {
    Command::new(dvnet_bin()).args(args).output().unwrap()
}

fn stats(lab: &str) -> Value {
    let out = dvnet(&["stats", lab, "--json"]);
    serde_json::from_str(&ok(&out, "dvnet stats")).unwrap()
}

fn rule_hits(stats: &Value, rule: &str) -> u64 {
    stats["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == rule)
        .unwrap_or_else(|| panic!("no rule {rule} in {stats}"))["hits"]
        .as_u64()
        .unwrap()
}

/// The lab node a container became on `network`: `c-` and its endpoint id's first 12.
fn node_of(container: &str, network: &str) -> String {
    let out = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").EndpointID}}}}"),
        container,
    ]);
    let endpoint = ok(&out, "docker inspect");
    format!("c-{}", &endpoint[..12])
}

/// A/B/D hosts, C between the routers, and a rule that keeps subnet D from B-1.
fn topology() -> Value {
    json!({
        "automatic_routing": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}, "A-2": {}}},
            "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}}},
            "C": {"cidr": "10.0.2.0/24", "hosts": {}},
            "D": {"cidr": "10.0.3.0/24", "hosts": {"D-1": {}}}
        },
        "routers": {
            "R-1": {"subnets": ["A", "C", "D"],
                    "fw_rules": {"policy": "ACCEPT", "drop": [["A-2", "B"], ["D", "B-1"]]}},
            "R-2": {"subnets": ["C", "B"]}
        }
    })
}

fn address_of(container: &str) -> String {
    let out = docker(&[
        "exec", container, "ip", "-4", "-o", "addr", "show", "dev", "eth0",
    ]);
    let line = ok(&out, "ip addr in the container");
    line.split_whitespace()
        .nth(3)
        .unwrap_or_else(|| panic!("an address: {line}"))
        .to_owned()
}

#[test]
fn a_lab_is_a_docker_network_and_containers_join_its_subnets() {
    if !require_docker("a_lab_is_a_docker_network_and_containers_join_its_subnets") {
        return;
    }
    let mut d = Driver::start("drv");
    let lab = unique("lab");
    // the whole lab: its nodes are dvnet/host and dvnet/router containers
    ok(
        &d.create_lab(&lab, &topology(), &[]),
        "docker network create (lab)",
    );
    let mut nodes = containers_of(&lab);
    nodes.sort();
    let expected: Vec<String> = ["a-1", "a-2", "b-1", "d-1", "r-1", "r-2"]
        .iter()
        .map(|n| format!("dv-{lab}.{n}"))
        .collect();
    assert_eq!(nodes, expected, "every node is a container");
    let listed = ok(
        &docker(&[
            "network",
            "ls",
            "--filter",
            &format!("driver={}", d.name),
            "--format",
            "{{.Name}}",
        ]),
        "docker network ls",
    );
    assert_eq!(
        listed, lab,
        "docker network ls lists the lab under the driver"
    );
    let ls = ok(&dvnet(&["ls", "--json"]), "dvnet ls");
    assert!(ls.contains(&format!("\"{lab}\"")), "dvnet ls sees it: {ls}");
    let a1 = format!("dv-{lab}.a-1");
    let a2 = format!("dv-{lab}.a-2");
    assert!(ping(&a1, "10.0.1.2"), "A-1 → B-1 through both routers");
    assert!(!ping(&a2, "10.0.1.2"), "A-2 → B is dropped by R-1");
    let trace = ok(
        &docker(&[
            "exec",
            &a1,
            "traceroute",
            "-n",
            "-w",
            "2",
            "-q",
            "1",
            "10.0.1.2",
        ]),
        "traceroute",
    );
    assert!(
        trace.contains(" 10.0.0.1 ") && trace.contains(" 10.0.2.") && trace.contains(" 10.0.1.2 "),
        "R-1, R-2, then B-1: {trace}"
    );
    // the lab network takes no container of its own
    let out = d.run(&unique("onlab"), &lab, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("net.dvnet.attach=LAB/SUBNET"),
        "{}",
        text(&out)
    );

    // subnet A, dvnet picks the addresses (A-1 .2, A-2 .3, so the first free is .4)
    let net_a = d.attach(&lab, "A");
    let ids = || {
        ok(
            &docker(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=org.dvnet.network={lab}"),
            ]),
            "docker ps",
        )
    };
    let before = ids();
    let ca = unique("ca");
    ok(&d.run(&ca, &net_a, &[]), "docker run on subnet A");
    assert_eq!(
        ids(),
        before,
        "a container joining leaves the lab's own containers be"
    );
    assert_eq!(address_of(&ca), "10.0.0.4/24");
    assert!(ping(&ca, "10.0.1.2"), "the container reaches B-1");
    assert!(ping(&a1, "10.0.0.4"), "A-1 reaches the container");

    // subnet D, Docker's addresses (--subnet is D's prefix, --ip picks)
    let net_d = unique("D");
    ok(
        &d.create_network(
            &net_d,
            &[
                "--subnet",
                "10.0.3.0/24",
                "--opt",
                &format!("net.dvnet.attach={lab}/D"),
            ],
        ),
        "docker network create (subnet D)",
    );
    let cd = unique("cd");
    ok(
        &d.run(&cd, &net_d, &["--ip", "10.0.3.50"]),
        "docker run on subnet D",
    );
    assert_eq!(address_of(&cd), "10.0.3.50/24");
    assert!(ping(&cd, "10.0.0.2"), "D reaches A-1");
    let before = rule_hits(&stats(&lab), r#"routers."R-1".fw_rules.drop[1]"#);
    let out = docker(&[
        "exec", &cd, "ping", "-c", "3", "-i", "0.2", "-W", "1", "10.0.1.2",
    ]);
    assert!(!out.status.success(), "D → B-1 is dropped: {}", text(&out));
    let s = stats(&lab);
    assert_eq!(
        rule_hits(&s, r#"routers."R-1".fw_rules.drop[1]"#) - before,
        3,
        "the rule naming subnet D dropped the container's 3 pings"
    );
    // the container's side is counted, like any host's
    let node = node_of(&cd, &net_d);
    let link = s["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["node"] == node.as_str())
        .unwrap_or_else(|| panic!("{node} in dvnet stats: {s}"));
    assert_eq!(link["subnet"], "D");
    assert!(
        link["rx"]["by_class"]["icmp"].as_u64().unwrap_or(0) >= 1,
        "the container's side counts the replies it got: {link}"
    );
    // an address that is taken is refused, saying whose it is
    // (Docker's own addresses, Docker refuses itself; the lab's, dvnet refuses)
    let out = d.run(&unique("clash"), &net_d, &["--ip", "10.0.3.50"]);
    assert!(!out.status.success(), "{}", text(&out));
    let out = d.run(&unique("clash"), &net_d, &["--ip", "10.0.3.2"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("10.0.3.2 is the address of node D-1"),
        "{}",
        text(&out)
    );

    // a running container connected to a second subnet is a host there too, then not
    ok(
        &docker(&["network", "connect", "--ip", "10.0.3.60", &net_d, &ca]),
        "docker network connect",
    );
    let second = node_of(&ca, &net_d);
    assert!(
        ok(&docker(&["exec", &ca, "ip", "-4", "-o", "addr"]), "ip addr").contains("10.0.3.60/24"),
        "the container has its address on D"
    );
    assert!(ping(&ca, "10.0.3.2"), "and reaches D-1 on it");
    assert!(ok(&dvnet(&["inspect", &lab, "--json"]), "dvnet inspect").contains(&second));
    ok(
        &docker(&["network", "disconnect", &net_d, &ca]),
        "docker network disconnect",
    );
    assert!(
        !ok(&dvnet(&["inspect", &lab, "--json"]), "dvnet inspect").contains(&second),
        "{second} left the lab"
    );
    assert!(
        !ok(&docker(&["exec", &ca, "ip", "-4", "-o", "addr"]), "ip addr").contains("10.0.3.60"),
        "the container's interface on D is gone"
    );

    // leaving: the container is gone from the lab, its interface from everywhere
    let gone = node_of(&ca, &net_a);
    assert!(ok(&dvnet(&["inspect", &lab, "--json"]), "dvnet inspect").contains(&gone));
    ok(&docker(&["rm", "-f", &ca]), "docker rm");
    let inspect = ok(&dvnet(&["inspect", &lab, "--json"]), "dvnet inspect");
    assert!(!inspect.contains(&gone), "{gone} left the lab: {inspect}");
    assert!(ping(&a1, "10.0.1.2"), "the rest of the lab is undisturbed");

    // everything goes with the networks
    let cd_node = node_of(&cd, &net_d);
    ok(&docker(&["rm", "-f", &cd]), "docker rm");
    for n in [&net_a, &net_d, &lab] {
        ok(&docker(&["network", "rm", n]), "docker network rm");
    }
    assert_eq!(containers_of(&lab), Vec::<String>::new());
    assert_eq!(leftovers_of(&lab), Vec::<String>::new());
    assert_eq!(
        interfaces_left(&[&gone, &second, &cd_node]),
        Vec::<String>::new()
    );
    d.stop(false);
    assert!(!d.socket.exists(), "the plugin removes its socket");
    assert!(
        !Path::new(&format!("/run/dvnet/.plugin/{}.json", d.name)).exists(),
        "an empty store is not left behind"
    );
}

#[test]
fn the_plugin_killed_and_restarted_still_knows_its_networks() {
    if !require_docker("the_plugin_killed_and_restarted_still_knows_its_networks") {
        return;
    }
    let mut d = Driver::start("drvkill");
    let lab = unique("lab");
    // nodes in namespaces: the lab is the plugin's, its nodes are not containers
    ok(
        &d.create_lab(&lab, &topology(), &["--opt", "net.dvnet.runtime=netns"]),
        "docker network create (netns lab)",
    );
    assert_eq!(containers_of(&lab), Vec::<String>::new());
    let net_a = d.attach(&lab, "A");
    let ca = unique("ca");
    ok(&d.run(&ca, &net_a, &[]), "docker run");
    assert!(
        ping(&ca, "10.0.1.2"),
        "the container reaches B-1 (a namespace)"
    );

    // a crash: the lab keeps forwarding without its plugin
    d.stop(true);
    assert!(ping(&ca, "10.0.1.2"), "the lab runs without the plugin");
    // the restarted plugin replaces the dead socket and finds its networks again
    d.serve();
    let cb = unique("cb");
    ok(&d.run(&cb, &net_a, &[]), "docker run after the restart");
    assert_eq!(
        address_of(&cb),
        "10.0.0.5/24",
        "the first container's .4 is still taken"
    );
    assert!(ping(&cb, "10.0.0.4"), "the new container reaches the first");
    let nodes = [node_of(&ca, &net_a), node_of(&cb, &net_a)];
    for c in [&ca, &cb] {
        ok(&docker(&["rm", "-f", c]), "docker rm");
    }
    for n in [&net_a, &lab] {
        ok(&docker(&["network", "rm", n]), "docker network rm");
    }
    assert_eq!(leftovers_of(&lab), Vec::<String>::new());
    assert_eq!(
        interfaces_left(&[&nodes[0], &nodes[1]]),
        Vec::<String>::new()
    );
}

#[test]
fn a_bad_lab_is_refused_with_its_path_and_leaves_nothing() {
    if !require_docker("a_bad_lab_is_refused_with_its_path_and_leaves_nothing") {
        return;
    }
    let mut d = Driver::start("drvbad");
    let lab = unique("lab");
    let mut bad = topology();
    bad["subnets"]["A"]["cidr"] = json!("10.0.0.0/33");
    bad["routers"]["R-1"]["subnets"] = json!(["A", "C", "E"]);
    let out = d.create_lab(&lab, &bad, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{lab}.json"))
            && err.contains(r#"subnets."A".cidr"#)
            && err.contains(r#"routers."R-1".subnets"#),
        "every problem, with the file and where: {err}"
    );
    assert_eq!(leftovers_of(&lab), Vec::<String>::new());
    assert_eq!(containers_of(&lab), Vec::<String>::new());
    // options: a relative path, none at all, a subnet of no lab, a misspelt key
    for (args, says) in [
        (vec!["--opt", "net.dvnet.def=lab.json"], "absolute path"),
        (vec![], "net.dvnet.def=/abs/path/lab.json"),
        (
            vec!["--opt", "net.dvnet.attach=no-such-lab/A"],
            "no running lab",
        ),
        (
            vec!["--opt", "net.dvnet.defs=/x.json"],
            "unknown option net.dvnet.defs",
        ),
    ] {
        let out = d.create_network(&unique("bad"), &args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn a_dockerd_restart_leaves_the_networks_usable_and_removable() {
    if !require_docker("a_dockerd_restart_leaves_the_networks_usable_and_removable") {
        return;
    }
    // with live-restore, dockerd's containers (the lab's own too) outlive it
    {
        let mut daemon = Daemon::start(&["--live-restore"]);
        daemon.load(&["dvnet/host", "dvnet/router"]);
        let mut d = Driver::start("drvlive");
        let lab = unique("lab");
        ok(
            &d.create_lab(&lab, &topology(), &[]),
            "docker network create (lab)",
        );
        let net_a = d.attach(&lab, "A");
        let ca = unique("ca");
        ok(&d.run(&ca, &net_a, &[]), "docker run");
        assert!(ping(&ca, "10.0.1.2"));
        daemon.restart();
        let a1 = format!("dv-{lab}.a-1");
        assert!(
            ping(&a1, "10.0.1.2"),
            "the lab works after dockerd's restart"
        );
        assert!(ping(&ca, "10.0.1.2"), "so does the joined container");
        let cb = unique("cb");
        ok(
            &d.run(&cb, &net_a, &[]),
            "a container joins after the restart",
        );
        assert!(ping(&cb, "10.0.0.4"), "and reaches the first");
        for c in [&ca, &cb] {
            ok(&docker(&["rm", "-f", c]), "docker rm");
        }
        for n in [&net_a, &lab] {
            ok(&docker(&["network", "rm", n]), "docker network rm");
        }
        assert_eq!(containers_of(&lab), Vec::<String>::new());
        assert_eq!(leftovers_of(&lab), Vec::<String>::new());
    }
    // without it, dockerd stops its containers: a lab of namespaces stays, a container
    // that restarts joins again (its old self has left)
    let mut daemon = Daemon::start(&[]);
    daemon.load(&["dvnet/host"]);
    let mut d = Driver::start("drvrestart");
    let lab = unique("lab");
    ok(
        &d.create_lab(&lab, &topology(), &["--opt", "net.dvnet.runtime=netns"]),
        "docker network create (netns lab)",
    );
    let net_a = d.attach(&lab, "A");
    let ca = unique("ca");
    ok(&d.run(&ca, &net_a, &["--restart", "always"]), "docker run");
    assert!(ping(&ca, "10.0.1.2"));
    let before = node_of(&ca, &net_a);
    daemon.restart();
    assert!(
        eventually(20, || ping(&ca, "10.0.1.2")),
        "the restarted container is back in the lab: {}",
        d.log()
    );
    let after = node_of(&ca, &net_a);
    let inspect = ok(&dvnet(&["inspect", &lab, "--json"]), "dvnet inspect");
    assert!(
        before != after && inspect.contains(&after) && !inspect.contains(&before),
        "{before} left, {after} joined: {inspect}"
    );
    ok(&docker(&["rm", "-f", &ca]), "docker rm");
    for n in [&net_a, &lab] {
        ok(&docker(&["network", "rm", n]), "docker network rm");
    }
    assert_eq!(leftovers_of(&lab), Vec::<String>::new());
    assert_eq!(interfaces_left(&[&before, &after]), Vec::<String>::new());
}

#[test]
fn plugin_install_says_how_to_run_it_where_there_is_no_systemd() {
    if std::path::Path::new("/run/systemd/system").exists() {
        // installing a unit would change the machine's services
        eprintln!("skipping: systemd runs here; `dvnet plugin install` would enable a unit");
        return;
    }
    let out = dvnet(&["plugin", "install"]);
    let said = ok(&out, "dvnet plugin install");
    assert!(
        said.contains("no systemd here")
            && said.contains("plugin --socket /run/docker/plugins/dvnet.sock"),
        "{said}"
    );
}

#[test]
fn the_classic_example_as_docker_networks_as_readme_shows() {
    if !require_docker("the_classic_example_as_docker_networks_as_readme_shows") {
        return;
    }
    // examples/classic.json, through `docker network create` (README.md's commands)
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/classic.json");
    let classic: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the example")).expect("JSON");
    let mut d = Driver::start("drvex");
    let lab = unique("classic");
    ok(
        &d.create_lab(&lab, &classic, &[]),
        "docker network create (the example)",
    );
    let a1 = format!("dv-{lab}.a-1");
    let a2 = format!("dv-{lab}.a-2");
    assert!(ping(&a1, "B-1"), "A-1 → B-1, by name (update_hosts)");
    assert!(!ping(&a2, "B-1"), "R-1 drops A-2 → B");
    let net_a = d.attach(&lab, "A");
    let mine = unique("mine");
    ok(
        &d.run(&mine, &net_a, &[]),
        "docker run --network <subnet A>",
    );
    assert!(
        ping(&mine, "10.0.1.2"),
        "a container of one's own reaches B-1"
    );
    ok(&docker(&["rm", "-f", &mine]), "docker rm");
    for n in [&net_a, &lab] {
        ok(&docker(&["network", "rm", n]), "docker network rm");
    }
    assert_eq!(containers_of(&lab), Vec::<String>::new());
    assert_eq!(leftovers_of(&lab), Vec::<String>::new());
}
