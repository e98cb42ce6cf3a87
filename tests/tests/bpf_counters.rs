//! Tier 2: the per-link counter programs, run by the kernel on crafted packets with
//! BPF_PROG_TEST_RUN. This proves the whole chain — toolchain, bpf-linker, verifier, maps.

use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    programs::{TestRun as _, TestRunOptions},
};
use dvnet::bpf::{self, MapSizes};
use dvnet_common::{
    IfaceInfo, LinkStats, NO_ROUTER, PacketClass, ROLE_FABRIC_PORT, dir, maps, programs,
};
use dvnet_tests::{packet, require_root};

/// BPF_PROG_TEST_RUN runs skb programs on the loopback device of the calling namespace.
const LOOPBACK_IFINDEX: u32 = 1;
const TC_ACT_OK: u32 = 0;

fn link_totals(ebpf: &aya::Ebpf, link: u32) -> LinkStats {
    let stats: PerCpuArray<&MapData, LinkStats> =
        PerCpuArray::try_from(ebpf.map(maps::LINK_STATS).expect("stats map"))
            .expect("per-cpu array");
    let mut total = LinkStats::default();
    for cpu in stats.get(&link, 0).expect("read stats").iter() {
        total.add(cpu);
    }
    total
}

#[test]
fn counters_count_packets_and_bytes_by_direction_and_class() {
    if !require_root("counters_count_packets_and_bytes_by_direction_and_class") {
        return;
    }
    let mut ebpf = bpf::open(MapSizes {
        links: 4,
        ifaces: 4,
    })
    .expect("open object");
    // The loopback device plays the fabric port of link 3.
    let mut ifaces: HashMap<_, u32, IfaceInfo> =
        HashMap::try_from(ebpf.map_mut(maps::IFACES).expect("ifaces map")).expect("hash map");
    let info = IfaceInfo {
        link: 3,
        router: NO_ROUTER,
        role: ROLE_FABRIC_PORT,
        pad: 0,
    };
    ifaces
        .insert(&LOOPBACK_IFINDEX, &info, 0)
        .expect("insert iface");

    let ping = packet::icmp_echo([10, 0, 0, 2], [10, 0, 1, 2], 64, 1);
    let arp = packet::arp_request([10, 0, 0, 2], [10, 0, 0, 1]);

    let from_node =
        bpf::load_program(&mut ebpf, programs::FABRIC_FROM_NODE).expect("load from_node");
    for _ in 0..10 {
        let r = from_node
            .test_run(TestRunOptions {
                data_in: Some(&ping),
                ..TestRunOptions::default()
            })
            .expect("test run");
        assert_eq!(
            r.return_value, TC_ACT_OK,
            "counters never change a packet's fate"
        );
    }
    let r = from_node
        .test_run(TestRunOptions {
            data_in: Some(&arp),
            ..TestRunOptions::default()
        })
        .expect("test run");
    assert_eq!(r.return_value, TC_ACT_OK);

    let to_node = bpf::load_program(&mut ebpf, programs::FABRIC_TO_NODE).expect("load to_node");
    for _ in 0..7 {
        to_node
            .test_run(TestRunOptions {
                data_in: Some(&ping),
                ..TestRunOptions::default()
            })
            .expect("test run");
    }

    let stats = link_totals(&ebpf, 3);
    let icmp = PacketClass::Icmp as usize;
    let ping_len = u64::try_from(ping.len()).unwrap();
    assert_eq!(
        stats.traffic[dir::FROM_NODE][icmp].packets,
        10,
        "10 pings sent → 10 counted: {stats:?}"
    );
    assert_eq!(stats.traffic[dir::FROM_NODE][icmp].bytes, 10 * ping_len);
    assert_eq!(
        stats.traffic[dir::FROM_NODE][PacketClass::Arp as usize].packets,
        1
    );
    assert_eq!(stats.traffic[dir::TO_NODE][icmp].packets, 7);
    assert_eq!(stats.traffic[dir::TO_NODE][icmp].bytes, 7 * ping_len);
    assert_eq!(
        stats.traffic[dir::TO_NODE][PacketClass::Arp as usize].packets,
        0
    );
    // Nothing leaks onto other links.
    assert_eq!(link_totals(&ebpf, 0), LinkStats::default());
}

#[test]
fn counters_ignore_interfaces_dvnet_did_not_create() {
    if !require_root("counters_ignore_interfaces_dvnet_did_not_create") {
        return;
    }
    let mut ebpf = bpf::open(MapSizes {
        links: 2,
        ifaces: 2,
    })
    .expect("open object");
    let ping = packet::icmp_echo([10, 0, 0, 2], [10, 0, 1, 2], 64, 1);
    let prog = bpf::load_program(&mut ebpf, programs::FABRIC_FROM_NODE).expect("load");
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(&ping),
            ..TestRunOptions::default()
        })
        .expect("test run");
    assert_eq!(r.return_value, TC_ACT_OK);
    for link in 0..2 {
        assert_eq!(link_totals(&ebpf, link), LinkStats::default());
    }
}
