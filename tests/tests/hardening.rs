//! Tier 3: what a hostile test campaign broke, each fixed and named after what broke: names
//! taken for paths, planted directories, concurrent operations on one network, containers
//! and processes outliving `down`, a host touched beyond what it promised, hostile files.
//! Every test runs dvnet inside a fake host namespace of its own.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dvnet_tests::{
    FakeHost, TestNet, dvnet_bin, leftovers_of, require_docker, require_root, run, text, unique,
};
use serde_json::{Value, json};

/// Two hosts behind one router: small and quick.
fn small() -> Value {
    json!({
        "name": "small", "automatic_routing": true, "update_hosts": true,
        "subnets": {
            "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}}},
            "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}}}
        },
        "routers": {"R-1": {"subnets": ["A", "B"]}}
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A directory with a file in it, to see that nothing deletes it.
fn victim() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/precious"), "keep me").unwrap();
    dir
}

fn intact(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("sub/precious")).is_ok_and(|t| t == "keep me")
}

#[test]
fn down_of_a_path_dot_or_dotdot_is_refused_and_deletes_nothing() {
    if !require_root("down_of_a_path_dot_or_dotdot_is_refused_and_deletes_nothing") {
        return;
    }
    // a network that is up beside it must survive every attempt
    let net = TestNet::new("paths", small());
    net.up(&[]);
    let victim = victim();
    let v = victim.path().to_str().unwrap().to_owned();
    // a record planted at a path: inspect and exec must not obey it
    std::fs::copy(
        format!("/run/dvnet/{}/state.msgpack", net.id),
        victim.path().join("state.msgpack"),
    )
    .unwrap();
    let relative = format!("../../../..{v}");
    for args in [
        vec!["down", v.as_str()],
        vec!["down", "."],
        vec!["down", ".."],
        vec!["down", relative.as_str()],
        vec!["down", "/"],
        vec!["inspect", v.as_str()],
        vec!["stats", v.as_str()],
        vec!["exec", v.as_str(), "A-1", "--", "true"],
    ] {
        // from inside the victim, so that `.` and `..` name it and its parent
        let out = run(net
            .host
            .command(dvnet_bin())
            .args(&args)
            .current_dir(victim.path().join("sub")));
        assert!(
            !out.status.success(),
            "{args:?} must be refused: {}",
            text(&out)
        );
        assert!(
            stderr(&out).contains("neither a network id nor a topology file"),
            "{args:?}: {}",
            text(&out)
        );
        assert!(intact(victim.path()), "{args:?} deleted the victim's files");
        assert!(Path::new("/run/dvnet").is_dir() && Path::new("/run/netns").is_dir());
        assert!(
            Path::new(&format!("/run/dvnet/{}/state.msgpack", net.id)).exists(),
            "{args:?} removed another network's record"
        );
    }
    assert!(net.ping("A-1", "B-1"), "the network beside was disturbed");
    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

#[test]
fn two_names_with_one_id_never_act_on_each_other() {
    if !require_root("two_names_with_one_id_never_act_on_each_other") {
        return;
    }
    let net = TestNet::new("twins", small());
    net.up(&[]);
    // the same id from another spelling: "dvt1-2-twins" and "DVT1_2 TWINS"
    let twin_name = net.id.to_uppercase().replace('-', "_");
    let out = net.host.dvnet(&["down", &twin_name]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("give the same id"), "{}", text(&out));
    let mut twin = small();
    twin["name"] = json!(twin_name);
    let file = net.dir.path().join("twin.json");
    std::fs::write(&file, twin.to_string()).unwrap();
    for command in ["up", "down"] {
        let out = net.host.dvnet(&[command, file.to_str().unwrap()]);
        assert!(!out.status.success(), "{command}: {}", text(&out));
    }
    assert!(net.ping("A-1", "B-1"), "the first network was disturbed");
    assert!(net.down().status.success());
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

/// Runs a shell script in a private mount namespace (its own bpffs and `/run/dvnet`), as
/// root, with `$DVNET` the binary and `$HOSTNS` the fake host's namespace file.
fn in_private_mounts(host: &FakeHost, script: &str) -> Output {
    run(Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-euc",
            script,
        ])
        .env("DVNET", dvnet_bin())
        .env("HOSTNS", format!("/run/netns/{}", host.name)))
}

#[test]
fn a_planted_pin_root_or_record_root_is_refused() {
    if !require_root("a_planted_pin_root_or_record_root_is_refused") {
        return;
    }
    let net = TestNet::new("planted", small());
    let victim = victim();
    let script = format!(
        r#"
        v={victim}; f={file}; id={id}
        dv() {{ nsenter --net="$HOSTNS" "$DVNET" "$@"; }}
        nobody() {{ setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }}
        refused() {{ if out=$(dv "$@" 2>&1); then echo "NOT REFUSED: $*: $out"; exit 1; fi
                     case "$out" in *"$expect"*) ;; *) echo "WRONG MESSAGE: $*: $out"; exit 1;; esac; }}
        # a fresh bpffs, writable by everyone (sticky), as on many machines
        mount -t bpf bpf /sys/fs/bpf && chmod 1777 /sys/fs/bpf
        mount -t tmpfs -o mode=755 tmpfs /run/dvnet
        chown 65534 "$v"
        # an unprivileged user's symbolic link at the pin root
        nobody ln -s "$v" /sys/fs/bpf/dvnet
        expect="is a symbolic link"
        refused up "$f"; refused down "$id"
        test -f "$v/sub/precious"
        rm /sys/fs/bpf/dvnet
        # a directory of theirs there
        nobody mkdir /sys/fs/bpf/dvnet
        expect="is owned by uid 65534"
        refused up "$f"; refused down "$id"
        rmdir /sys/fs/bpf/dvnet
        # a record root anyone can write
        chmod 1777 /run/dvnet
        expect="is writable by others"
        refused up "$f"; refused down "$id"
        chmod 755 /run/dvnet
        # nothing was created by the refusals
        test ! -e /sys/fs/bpf/dvnet && test -z "$(ls -A /run/dvnet)"
        # with the field clear, dvnet makes its pin root itself: root's alone
        dv up "$f" >/dev/null
        test "$(stat -c '%a %u %F' /sys/fs/bpf/dvnet)" = "700 0 directory"
        dv down "$id" >/dev/null
        test ! -e "/sys/fs/bpf/dvnet/$id"
        echo ALL-GOOD
        "#,
        victim = victim.path().display(),
        file = net.file.display(),
        id = net.id,
    );
    let out = in_private_mounts(&net.host, &script);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ALL-GOOD"),
        "{}",
        text(&out)
    );
    assert!(intact(victim.path()));
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

#[test]
fn concurrent_ups_on_a_machine_without_bpffs_mount_it_once_and_all_come_up() {
    if !require_root("concurrent_ups_on_a_machine_without_bpffs_mount_it_once_and_all_come_up") {
        return;
    }
    // A CI run lost one of several networks coming up at once on a fresh machine: two `up`s
    // each saw bpffs unmounted and mounted it, the second over the first, and the pin root
    // the first had just made was hidden ("creating /sys/fs/bpf/dvnet/<id>: No such file").
    let nets: Vec<TestNet> = (0..6)
        .map(|i| TestNet::new(&format!("bpffs{i}"), small()))
        .collect();
    let files: Vec<String> = nets.iter().map(|n| n.file.display().to_string()).collect();
    let ids: Vec<&str> = nets.iter().map(|n| n.id.as_str()).collect();
    let script = format!(
        r#"
        dv() {{ nsenter --net="$HOSTNS" "$DVNET" "$@"; }}
        # a machine that has not mounted bpffs yet (in this mount namespace only)
        while grep -q ' /sys/fs/bpf bpf ' /proc/self/mounts; do umount /sys/fs/bpf; done
        mount -t tmpfs -o mode=755 tmpfs /run/dvnet
        dir=$(mktemp -d)
        i=0
        for f in {files}; do
            (if dv up "$f" >"$dir/$i" 2>&1; then :; else echo "UP FAILED: $f: $(cat "$dir/$i")"; fi) &
            i=$((i + 1))
        done
        wait
        cat "$dir"/*
        mounts=$(grep -c ' /sys/fs/bpf bpf ' /proc/self/mounts)
        for id in {ids}; do dv down "$id" >/dev/null; done
        test "$mounts" = 1 || {{ echo "bpffs mounted $mounts times"; exit 1; }}
        echo ALL-DOWN
        "#,
        files = files.join(" "),
        ids = ids.join(" "),
    );
    let out = in_private_mounts(&nets[0].host, &script);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.matches("is up").count(), 6, "{}", text(&out));
    assert!(
        out.status.success() && said.contains("ALL-DOWN") && !said.contains("UP FAILED"),
        "{}",
        text(&out)
    );
    for net in &nets {
        assert_eq!(net.leftovers(), Vec::<String>::new());
    }
}

/// A chain of `n` nodes written into `host`'s temp dir; returns (file, id).
fn chain(host: &FakeHost, dir: &Path, n: usize, tag: &str) -> (String, String) {
    let id = unique(tag);
    let file = dir.join(format!("{tag}.json"));
    let out = host.dvnet(&[
        "gen",
        "chain",
        &n.to_string(),
        "--name",
        &id,
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    (file.to_str().unwrap().to_owned(), id)
}

#[test]
fn ten_concurrent_ups_of_one_file_leave_one_whole_network() {
    if !require_root("ten_concurrent_ups_of_one_file_leave_one_whole_network") {
        return;
    }
    let host = FakeHost::new("tenup");
    let dir = tempfile::tempdir().unwrap();
    let (file, id) = chain(&host, dir.path(), 60, "tenup");
    let children: Vec<_> = (0..10)
        .map(|_| {
            host.command(dvnet_bin())
                .args(["up", &file])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn dvnet up")
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let ok = outs.iter().filter(|o| o.status.success()).count();
    let report: Vec<String> = outs.iter().map(text).collect();
    assert_eq!(ok, 1, "exactly one up must win: {report:#?}");
    for out in outs.iter().filter(|o| !o.status.success()) {
        assert!(stderr(out).contains("is already up"), "{}", text(out));
    }
    // one network, whole: every node's namespace, and traffic end to end
    let ls = host.dvnet(&["ls", "--json"]);
    let rows: Value = serde_json::from_slice(&ls.stdout).unwrap();
    let mine: Vec<&Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"] == id.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{rows}");
    assert_eq!(mine[0]["status"], "up", "{rows}");
    let inspect = host.dvnet(&["inspect", &id, "--json"]);
    let inspect: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let nodes = inspect["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 60);
    let namespaces = leftovers_of(&id)
        .iter()
        .filter(|l| l.starts_with("/run/netns/"))
        .count();
    assert_eq!(namespaces, 61, "60 nodes and the fabric");
    let plan = &inspect["state"]["plan"];
    let hosts: Vec<&Value> = plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "host")
        .collect();
    let (first, last) = (&hosts[0], &hosts[hosts.len() - 1]);
    let first = first["name"].as_str().unwrap();
    let link = last["links"][0].as_u64().unwrap();
    let target = plan["links"][usize::try_from(link).unwrap()]["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let last = last["name"].as_str().unwrap();
    let ping = host.dvnet(&[
        "exec", &id, first, "--", "ping", "-c", "1", "-W", "3", &target,
    ]);
    assert!(ping.status.success(), "{first} → {last}: {}", text(&ping));
    let out = host.dvnet(&["down", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(leftovers_of(&id), Vec::<String>::new());
}

#[test]
fn down_during_up_waits_and_leaves_nothing() {
    if !require_root("down_during_up_waits_and_leaves_nothing") {
        return;
    }
    let host = FakeHost::new("downup");
    let dir = tempfile::tempdir().unwrap();
    let (file, id) = chain(&host, dir.path(), 301, "downup");
    let up = host
        .command(dvnet_bin())
        .args(["up", &file])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dvnet up");
    // `up` is building once its first namespaces exist
    let deadline = Instant::now() + Duration::from_secs(20);
    while leftovers_of(&id).len() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let down = host.dvnet(&["down", &id]);
    let up = up.wait_with_output().unwrap();
    assert!(up.status.success(), "up: {}", text(&up));
    assert!(down.status.success(), "down: {}", text(&down));
    assert!(
        stderr(&down).contains("busy: waiting for `dvnet up`"),
        "down did not wait for up: {}",
        text(&down)
    );
    assert!(
        String::from_utf8_lossy(&down.stdout).contains("removed 302 namespaces"),
        "{}",
        text(&down)
    );
    assert_eq!(leftovers_of(&id), Vec::<String>::new());
    let ls = host.dvnet(&["ls", "--json"]);
    assert!(
        !String::from_utf8_lossy(&ls.stdout).contains(&id),
        "{}",
        text(&ls)
    );
}

/// A lab of `n` container hosts on one segment.
fn containers_lab(n: usize) -> Value {
    let hosts: serde_json::Map<String, Value> = (1..=n)
        .map(|i| (format!("h{i}"), json!({"image": "dvnet/host"})))
        .collect();
    json!({"name": "c", "subnets": {"A": {"cidr": "10.0.0.0/24", "hosts": hosts}}})
}

fn labelled_containers(id: &str) -> Vec<String> {
    let out = run(Command::new("docker").args([
        "ps",
        "-a",
        "--filter",
        &format!("label=org.dvnet.network={id}"),
        "--format",
        "{{.Names}}",
    ]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A container a test made by hand, removed on drop.
struct Foreign(String);

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn a_foreign_container_holding_a_name_leaves_no_labelled_container() {
    if !require_docker("a_foreign_container_holding_a_name_leaves_no_labelled_container") {
        return;
    }
    let net = TestNet::new("foreign", containers_lab(6));
    let name = format!("dv-{}.h4", net.id);
    let out = run(Command::new("docker").args(["create", "--name", &name, "dvnet/host"]));
    assert!(out.status.success(), "{}", text(&out));
    let foreign = Foreign(name.clone());
    let out = net.host.dvnet(&["up", net.file.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains(&name) && stderr(&out).contains("already taken"),
        "{}",
        text(&out)
    );
    assert_eq!(labelled_containers(&net.id), Vec::<String>::new());
    assert_eq!(net.leftovers(), Vec::<String>::new());
    // the foreign container is untouched
    let out = run(Command::new("docker").args(["inspect", &foreign.0]));
    assert!(out.status.success(), "the foreign container is gone");
}

#[test]
fn kill_during_container_creation_then_down_leaves_no_container() {
    if !require_docker("kill_during_container_creation_then_down_leaves_no_container") {
        return;
    }
    let net = TestNet::new("killc", containers_lab(8));
    let mut up = net
        .host
        .command(dvnet_bin())
        .args(["up", net.file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dvnet up");
    // killed as soon as the first container exists: the others are in flight in Docker
    let deadline = Instant::now() + Duration::from_secs(30);
    while labelled_containers(&net.id).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    up.kill().expect("kill -9 dvnet up");
    let _ = up.wait();
    assert!(
        !labelled_containers(&net.id).is_empty(),
        "up was killed before it created a container"
    );
    // a crashed `up` shows in `ls`
    let ls = net.host.dvnet(&["ls", "--json"]);
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains(&net.id),
        "{}",
        text(&ls)
    );
    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(labelled_containers(&net.id), Vec::<String>::new());
    // and none turns up later either
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(labelled_containers(&net.id), Vec::<String>::new());
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

#[test]
fn ls_shows_containers_whose_network_has_no_record() {
    if !require_docker("ls_shows_containers_whose_network_has_no_record") {
        return;
    }
    let host = FakeHost::new("orphan");
    let id = unique("orphan");
    let name = format!("dv-{id}.x");
    let out = run(Command::new("docker").args([
        "create",
        "--name",
        &name,
        "--label",
        &format!("org.dvnet.network={id}"),
        "dvnet/host",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let _foreign = Foreign(name);
    let ls = host.dvnet(&["ls", "--json"]);
    let rows: Value = serde_json::from_slice(&ls.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str());
    assert_eq!(
        row.map(|r| r["status"].clone()),
        Some(json!("orphaned")),
        "{rows}"
    );
    let out = host.dvnet(&["down", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 containers"),
        "{}",
        text(&out)
    );
    assert_eq!(labelled_containers(&id), Vec::<String>::new());
}

/// Process ids whose command line names `needle`, with their state letter.
fn processes_naming(needle: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("?")
                .to_owned();
            found.push((pid, state));
        }
    }
    found
}

#[test]
fn down_returns_only_after_frr_and_every_process_it_stopped_have_exited() {
    if !require_root("down_returns_only_after_frr_and_every_process_it_stopped_have_exited") {
        return;
    }
    let net = TestNet::new(
        "frrdown",
        json!({
            "name": "frr", "routing": "ospf",
            "subnets": {
                "A": {"cidr": "10.0.0.0/24", "hosts": {"A-1": {}}},
                "B": {"cidr": "10.0.1.0/24", "hosts": {"B-1": {}}},
                "C": {"cidr": "10.0.2.0/24", "hosts": {}}
            },
            "routers": {"R-1": {"subnets": ["A", "C"]}, "R-2": {"subnets": ["C", "B"]}}
        }),
    );
    net.up(&[]);
    let needle = format!("/run/dvnet/{}/frr/", net.id);
    let daemons = processes_naming(&needle);
    // zebra, staticd and ospfd in each of two routers
    assert_eq!(daemons.len(), 6, "{daemons:?}");
    // and a server a user left in a host, which stops cleanly on SIGTERM but takes a second
    let stopped = net.dir.path().join("stopped");
    let ready = net.dir.path().join("ready");
    let marker = format!("dvnet-test-{}", net.id);
    let script = format!(
        "trap 'sleep 1; echo clean > {}; exit 0' TERM; echo > {}; while :; do sleep 0.1; done # {marker}",
        stopped.display(),
        ready.display()
    );
    let server = net
        .host
        .command(dvnet_bin())
        .args(["exec", &net.id, "A-1", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn a server");
    // ready once its trap is set (its command line shows earlier, in `dvnet exec`)
    assert!(
        dvnet_tests::eventually(10, || ready.exists()),
        "the server did not start"
    );
    let started = Instant::now();
    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    // six daemons, the server's shell, and its `sleep` when there is one at that moment
    let stopped_count = String::from_utf8_lossy(&out.stdout)
        .split("stopped ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse::<usize>().ok());
    assert!(matches!(stopped_count, Some(7 | 8)), "{}", text(&out));
    // the moment down returns: every process has exited (a zombie waiting for init to reap
    // it holds no namespace, memory, socket or file)
    let running: Vec<(i32, String)> = processes_naming(&needle)
        .into_iter()
        .chain(processes_naming(&marker))
        .filter(|(_, state)| state != "Z" && state != "X")
        .collect();
    assert_eq!(running, Vec::new(), "processes outlived down");
    // it was asked to stop (SIGTERM) before anything harsher, and down waited for it
    assert_eq!(
        std::fs::read_to_string(&stopped).ok().as_deref(),
        Some("clean\n"),
        "the server never got SIGTERM"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    drop(server);
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

/// `host`'s links, routes and nftables tables, as text.
fn host_snapshot(host: &FakeHost) -> String {
    let nft = run(host.command("nft").args(["list", "tables"]));
    format!(
        "{}{}{}",
        host.ip(&["-o", "link"]),
        host.ip(&["-o", "route"]),
        String::from_utf8_lossy(&nft.stdout)
    )
}

fn with_outbound(mut topo: Value) -> Value {
    topo["outbound_access"] = json!({"enabled": true, "cidr": "192.168.240.0/24"});
    topo
}

#[test]
fn a_subnet_inside_a_host_prefix_is_refused_with_outbound_access() {
    if !require_root("a_subnet_inside_a_host_prefix_is_refused_with_outbound_access") {
        return;
    }
    let mut topo = with_outbound(small());
    topo["subnets"]["A"]["cidr"] = json!("10.99.0.128/25");
    let net = TestNet::new("lanclash", topo);
    // the host's own LAN
    net.host.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ]);
    net.host.ip(&["addr", "add", "10.99.0.1/24", "dev", "lan0"]);
    net.host.ip(&["link", "set", "lan0", "up"]);
    let before = host_snapshot(&net.host);
    let out = net.host.dvnet(&["up", net.file.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("clashes with the host's route to 10.99.0.0/24"),
        "{}",
        text(&out)
    );
    assert_eq!(host_snapshot(&net.host), before);
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

/// The name of the host's end of a network's uplink, from its plan.
fn uplink_name(net: &TestNet) -> String {
    let out = net
        .host
        .dvnet(&["plan", net.file.to_str().unwrap(), "--json"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    plan["uplink"]["host_ifname"].as_str().unwrap().to_owned()
}

#[test]
fn a_refused_up_keeps_the_hosts_interface_named_like_its_uplink() {
    if !require_root("a_refused_up_keeps_the_hosts_interface_named_like_its_uplink") {
        return;
    }
    let net = TestNet::new("ifname", with_outbound(small()));
    let name = uplink_name(&net);
    net.host.ip(&[
        "link", "add", &name, "type", "veth", "peer", "name", "mine1",
    ]);
    let before = host_snapshot(&net.host);
    let out = net.host.dvnet(&["up", net.file.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains(&format!("already has an interface {name}")),
        "{}",
        text(&out)
    );
    assert_eq!(
        host_snapshot(&net.host),
        before,
        "the host's interface was touched"
    );
    assert_eq!(net.leftovers(), Vec::<String>::new());
}

#[test]
fn down_of_a_network_not_up_touches_no_interface_or_table_of_its_name() {
    if !require_root("down_of_a_network_not_up_touches_no_interface_or_table_of_its_name") {
        return;
    }
    let net = TestNet::new("notmine", with_outbound(small()));
    let name = uplink_name(&net);
    net.host.ip(&[
        "link", "add", &name, "type", "veth", "peer", "name", "mine1",
    ]);
    let table = format!("dvnet_{}", net.id.replace('-', "_"));
    let out = run(net.host.command("nft").args(["add", "table", "ip", &table]));
    assert!(out.status.success(), "{}", text(&out));
    let before = host_snapshot(&net.host);
    assert!(before.contains(&table) && before.contains(&name));
    let out = net.down();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to remove"),
        "{}",
        text(&out)
    );
    assert_eq!(host_snapshot(&net.host), before);
    // and `up` refuses to adopt the table
    let out = net.host.dvnet(&["up", net.file.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("already has"), "{}", text(&out));
    assert_eq!(host_snapshot(&net.host), before);
}

#[test]
fn hostile_files_are_refused_promptly_and_a_bom_works_both_ways() {
    // validate needs no root: a FIFO and a device are refused at once, never read
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for file in [fifo.to_str().unwrap(), "/dev/zero"] {
        let started = Instant::now();
        let mut child = Command::new(dvnet_bin())
            .args(["validate", file])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
            panic!("validate {file} hangs");
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{file}: {}", text(&out));
        assert!(
            stderr(&out).contains("not a regular file"),
            "{}",
            text(&out)
        );
    }
    // an error quoted by its context is said once
    let out = run(Command::new(dvnet_bin()).args(["validate", "/nonexistent/net.json"]));
    assert_eq!(
        stderr(&out).matches("No such file or directory").count(),
        1,
        "{}",
        text(&out)
    );
    if !require_root("hostile_files_are_refused_promptly_and_a_bom_works_both_ways") {
        return;
    }
    let net = TestNet::new("bom", small());
    let plain = std::fs::read_to_string(&net.file).unwrap();
    std::fs::write(&net.file, format!("\u{feff}{plain}")).unwrap();
    net.up(&[]);
    let out = net.host.dvnet(&["down", net.file.to_str().unwrap()]);
    assert!(out.status.success(), "down FILE with a BOM: {}", text(&out));
    assert_eq!(net.leftovers(), Vec::<String>::new());
}
