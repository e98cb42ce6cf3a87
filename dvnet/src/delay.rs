//! dvnet's delay line: delay, jitter and rate where the kernel has no netem.
//!
//! The datapath sends a packet that must wait into the near end of a veth pair (see
//! [`crate::plan::DelayLine`]); this process, one per network, running in the network's
//! fabric namespace, reads it at the far end, holds it until its time comes, and sends it
//! back through the far end: the near end's program hands it on to the ingress it was taken
//! from. A packet waits for the line to be free (`rate`: its bits, at that rate, after the
//! packet before it), then travels for `delay` ± `jitter` (uniform; with jitter, packets may
//! overtake each other, as with netem). At most [`QUEUE_LIMIT`] packets wait per line (as
//! netem's default); more are dropped and counted (`queue-full`).
//!
//! Packets keep their offloads: read and written with their `virtio_net_hdr`
//! (`PACKET_VNET_HDR`), a TCP super-packet stays one, its checksum still to be done.
//!
//! `dvnet apply` and `up` say which lines it serves ([`configure`]: `delaylines.json` in
//! the network's record directory, then SIGHUP; started with the first line, stopped with
//! the last, and gone with `down`, since it runs in the fabric namespace). An edit tells it
//! of a new line before the datapath sends packets into it, and lets go of a line only
//! after the datapath has stopped: a line that goes sends what it holds at once, so no
//! packet is lost on the way. It says what it holds in `delayline.json`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::io;
use std::os::fd::{AsFd as _, AsRawFd, FromRawFd as _, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::state;

/// Packets waiting on one line, at most (netem's default `limit`).
pub const QUEUE_LIMIT: usize = 1000;
/// The status file, in the network's record directory.
const STATUS_FILE: &str = "delayline.json";
/// What the delay line serves, written by dvnet, in the network's record directory.
const CONFIG_FILE: &str = "delaylines.json";
/// Its log.
const LOG_FILE: &str = "delayline.log";
/// `struct virtio_net_hdr`, before every frame.
const VNET_HDR: usize = 10;
/// The largest frame (a GSO super-packet) plus its header.
const FRAME_MAX: usize = 65_536 + VNET_HDR;

#[derive(Debug, thiserror::Error)]
pub enum DelayError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error(
        "dvnet's delay line for network {id} did not come up within {seconds} s; its log: {log}"
    )]
    NoAnswer {
        id: String,
        seconds: u64,
        log: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DelayError {
    let what = what.into();
    move |source| DelayError::Io { what, source }
}

/// One line: where packets of one direction of one link wait.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineConfig {
    pub link: u32,
    /// Packets into the node (else: from it).
    pub into: bool,
    pub far_ifname: String,
    pub far_ifindex: u32,
    pub delay_ns: u64,
    pub jitter_ns: u64,
    pub rate_bps: Option<u64>,
    pub seed: Option<u64>,
}

/// The lines of a plan.
#[must_use]
pub fn lines_of(plan: &Plan) -> Vec<LineConfig> {
    let mut out = Vec::new();
    for link in &plan.links {
        for (into, hook) in [(true, &link.into_node), (false, &link.from_node)] {
            let Some(d) = &hook.delay else {
                continue;
            };
            let i = &hook.impair;
            out.push(LineConfig {
                link: link.id,
                into,
                far_ifname: d.far_ifname.clone(),
                far_ifindex: d.far_ifindex,
                delay_ns: u64::from(i.delay_us.unwrap_or(0)) * 1000,
                jitter_ns: u64::from(i.jitter_us.unwrap_or(0)) * 1000,
                rate_bps: i.rate_bps,
                seed: i.seed,
            });
        }
    }
    out
}

/// What the delay line says of itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    /// The version of the configuration it serves.
    pub version: u64,
    pub lines: Vec<LineStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LineStatus {
    pub link: u32,
    pub into: bool,
    /// Packets waiting now.
    pub queued: usize,
    /// Packets sent on after waiting.
    pub sent: u64,
    /// Packets dropped because the queue was full.
    pub queue_full: u64,
    /// Why the line does not work, if it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn status_path(id: &str) -> PathBuf {
    state::dir(id).join(STATUS_FILE)
}

/// The status the delay line of network `id` last wrote, if it runs.
#[must_use]
pub fn status(id: &str) -> Option<Status> {
    let text = std::fs::read(status_path(id)).ok()?;
    let status: Status = serde_json::from_slice(&text).ok()?;
    is_ours(status.pid, id).then_some(status)
}

/// Whether process `pid` is the delay line of network `id`.
fn is_ours(pid: u32, id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    args.len() >= 3 && args[1] == b"delayline" && args[2] == id.as_bytes()
}

/// What dvnet asks of the delay line.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Config {
    version: u64,
    lines: Vec<LineConfig>,
}

fn config_path(id: &str) -> PathBuf {
    state::dir(id).join(CONFIG_FILE)
}

fn read_config(id: &str) -> Option<Config> {
    serde_json::from_slice(&std::fs::read(config_path(id)).ok()?).ok()
}

/// Has the delay line of network `id` (fabric namespace `fabric`) serve `lines`: started
/// with the first, told of a change (SIGHUP), stopped with none left (it sends what it holds
/// first). Returns once it serves them.
///
/// # Errors
/// When it cannot be started, or does not answer.
pub fn configure(id: &str, fabric: &str, lines: Vec<LineConfig>) -> Result<(), DelayError> {
    let running = status(id).map(|s| s.pid);
    let current = read_config(id).unwrap_or_default();
    if lines.is_empty() {
        if let Some(pid) = running {
            let pid = i32::try_from(pid).unwrap_or(0);
            let _ = crate::netns::stop_processes(&[pid], Duration::from_secs(2));
        }
        let _ = std::fs::remove_file(status_path(id));
        let _ = std::fs::remove_file(config_path(id));
        return Ok(());
    }
    if running.is_some() && current.lines == lines {
        return Ok(());
    }
    let config = Config {
        version: current.version + 1,
        lines,
    };
    let path = config_path(id);
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(&config).expect("a configuration serializes"),
    )
    .and_then(|()| std::fs::rename(&tmp, &path))
    .map_err(io_err(format!("writing {}", path.display())))?;
    match running {
        Some(pid) => {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0));
            let _ = nix::sys::signal::kill(pid, Signal::SIGHUP);
        }
        None => spawn(id, fabric)?,
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if status(id).is_some_and(|s| s.version == config.version) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DelayError::NoAnswer {
                id: id.to_owned(),
                seconds: 5,
                log: state::dir(id).join(LOG_FILE).display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The lines of `old` and of `new` together (`new`'s settings where both have one): what
/// an edit serves while the datapath moves from one to the other.
#[must_use]
pub fn lines_during(old: &Plan, new: &Plan) -> Vec<LineConfig> {
    let mut lines: BTreeMap<(u32, bool), LineConfig> = lines_of(old)
        .into_iter()
        .map(|c| ((c.link, c.into), c))
        .collect();
    for c in lines_of(new) {
        lines.insert((c.link, c.into), c);
    }
    lines.into_values().collect()
}

/// Starts `dvnet delayline ID` in the fabric namespace, in a session of its own.
fn spawn(id: &str, fabric: &str) -> Result<(), DelayError> {
    use std::os::unix::process::CommandExt as _;
    let exe = crate::exe().map_err(io_err("finding the dvnet binary"))?;
    let ns = crate::netns::open(fabric)?;
    let log_path = state::dir(id).join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err(format!("opening {}", log_path.display())))?;
    let raw = ns.as_raw_fd();
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("delayline")
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(io_err("opening the log"))?)
        .stderr(log);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(io_err("starting dvnet's delay line"))?;
    drop(ns);
    // reaped here if it ends while this process lives (a long-running plugin)
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

/// A packet waiting.
struct Held {
    due: u64,
    seq: u64,
    frame: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    /// Earliest first (a max-heap of reversed order).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

struct Line {
    cfg: LineConfig,
    socket: Option<OwnedFd>,
    held: BinaryHeap<Held>,
    /// When the line is free again (rate), ns.
    free_at: u64,
    rng: u64,
    seq: u64,
    sent: u64,
    queue_full: u64,
    error: Option<String>,
}

/// splitmix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

impl Line {
    fn new(cfg: LineConfig) -> Line {
        let mut line = Line {
            rng: cfg.seed.unwrap_or_else(random_seed),
            cfg,
            socket: None,
            held: BinaryHeap::new(),
            free_at: 0,
            seq: 0,
            sent: 0,
            queue_full: 0,
            error: None,
        };
        line.open();
        line
    }

    fn open(&mut self) {
        match packet_socket(self.cfg.far_ifindex) {
            Ok(s) => {
                self.socket = Some(s);
                self.error = None;
            }
            Err(e) => {
                self.socket = None;
                self.error = Some(format!("{}: {e}", self.cfg.far_ifname));
                tracing::warn!(line = %self.cfg.far_ifname, "cannot read the line: {e}");
            }
        }
    }

    /// A packet (`frame`, its offload header first) arrived at `now`: when it leaves.
    fn due(&mut self, now: u64, frame: &[u8]) -> u64 {
        let mut start = now;
        if let Some(rate) = self.cfg.rate_bps {
            start = start.max(self.free_at);
            let bits = wire_bytes(frame) * 8;
            self.free_at = start + bits.saturating_mul(1_000_000_000) / rate.max(1);
            start = self.free_at;
        }
        let mut delay = self.cfg.delay_ns;
        if self.cfg.jitter_ns > 0 {
            let span = 2 * self.cfg.jitter_ns + 1;
            let offset = next(&mut self.rng) % span;
            delay = (delay + offset).saturating_sub(self.cfg.jitter_ns);
        }
        start + delay
    }

    /// Reads what has arrived (at most a burst): queued, or dropped when the queue is full.
    fn receive(&mut self, now: u64, buf: &mut [u8]) {
        let Some(fd) = self.socket.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        for _ in 0..256 {
            // SAFETY: a buffer of its length.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            let Ok(n) = usize::try_from(n) else {
                return;
            };
            if n <= VNET_HDR {
                continue;
            }
            if self.held.len() >= QUEUE_LIMIT {
                self.queue_full += 1;
                continue;
            }
            let due = self.due(now, &buf[..n]);
            self.seq += 1;
            self.held.push(Held {
                due,
                seq: self.seq,
                frame: buf[..n].to_vec(),
            });
        }
    }

    /// Sends on at once everything it holds and everything waiting to be read (the line
    /// goes).
    fn drain(&mut self, buf: &mut [u8]) {
        loop {
            let before = self.held.len();
            self.receive(now_ns(), buf);
            self.release(u64::MAX);
            if self.held.len() == before && self.held.is_empty() {
                let Some(fd) = self.socket.as_ref().map(AsRawFd::as_raw_fd) else {
                    return;
                };
                // SAFETY: a peek at the socket, no data taken.
                let n = unsafe {
                    libc::recv(
                        fd,
                        buf.as_mut_ptr().cast(),
                        1,
                        libc::MSG_DONTWAIT | libc::MSG_PEEK,
                    )
                };
                if n <= 0 {
                    return;
                }
            }
        }
    }

    /// Sends on every packet whose time has come.
    fn release(&mut self, now: u64) {
        let Some(socket) = &self.socket else {
            self.held.clear();
            return;
        };
        while self.held.peek().is_some_and(|h| h.due <= now) {
            let h = self.held.pop().expect("peeked");
            // SAFETY: the frame's own buffer and length.
            let rc = unsafe {
                libc::send(
                    socket.as_raw_fd(),
                    h.frame.as_ptr().cast(),
                    h.frame.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if rc >= 0 {
                self.sent += 1;
            }
        }
    }

    fn status(&self) -> LineStatus {
        LineStatus {
            link: self.cfg.link,
            into: self.cfg.into,
            queued: self.held.len(),
            sent: self.sent,
            queue_full: self.queue_full,
            error: self.error.clone(),
        }
    }
}

/// The bytes a frame takes on the wire: a TCP or UDP super-packet (its `virtio_net_hdr`
/// says so) is as many frames as it has segments, each with the headers.
fn wire_bytes(frame: &[u8]) -> u64 {
    let data = &frame[VNET_HDR.min(frame.len())..];
    let len = data.len() as u64;
    let gso_size = u64::from(u16::from_le_bytes([frame[4], frame[5]]));
    if gso_size == 0 || data.len() < 34 {
        return len;
    }
    // Ethernet, IPv4 (its IHL), then TCP (its data offset) or UDP
    let ip = 14;
    let ihl = usize::from(data[ip] & 0x0f) * 4;
    let l4 = ip + ihl;
    let l4_len = match data.get(ip + 9) {
        Some(6) => data.get(l4 + 12).map_or(20, |o| usize::from(o >> 4) * 4),
        _ => 8,
    };
    let headers = (l4 + l4_len) as u64;
    let payload = len.saturating_sub(headers);
    let segments = payload.div_ceil(gso_size).max(1);
    payload + segments * headers
}

/// A raw socket on `ifindex` with the frames' offload headers, not seeing what it sends.
#[allow(
    clippy::cast_possible_truncation,
    reason = "C constants and struct sizes that fit their C types"
)]
fn packet_socket(ifindex: u32) -> io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain system calls on a descriptor owned from here on.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(proto),
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for (level, option) in [
            (libc::SOL_PACKET, libc::PACKET_VNET_HDR),
            (libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING),
        ] {
            if libc::setsockopt(
                fd.as_raw_fd(),
                level,
                option,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        let buffer: libc::c_int = 8 << 20;
        // a larger buffer helps bursts; the kernel caps it
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const buffer).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
        if libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }
}

fn now_ns() -> u64 {
    let t =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("a monotonic clock");
    u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0)
}

/// The lines, by (link, into).
type Lines = BTreeMap<(u32, bool), Line>;

/// Reads the configuration: lines kept (their queues too), made, or — gone — emptied at
/// once (what they hold is sent on now) and closed. Returns its version.
fn reload(id: &str, lines: &mut Lines) -> Result<u64, DelayError> {
    let path = config_path(id);
    let config: Config = std::fs::read(&path)
        .map_err(io_err(format!("reading {}", path.display())))
        .and_then(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| DelayError::Io {
                what: format!("reading {}", path.display()),
                source: io::Error::other(e),
            })
        })?;
    let wanted: BTreeMap<(u32, bool), LineConfig> = config
        .lines
        .into_iter()
        .map(|c| ((c.link, c.into), c))
        .collect();
    let mut buf = vec![0u8; FRAME_MAX];
    for (_, line) in lines.iter_mut().filter(|(k, _)| !wanted.contains_key(k)) {
        line.drain(&mut buf);
    }
    lines.retain(|k, _| wanted.contains_key(k));
    for (k, cfg) in wanted {
        match lines.get_mut(&k) {
            Some(line) if line.cfg.far_ifindex == cfg.far_ifindex => {
                if line.cfg.seed != cfg.seed {
                    line.rng = cfg.seed.unwrap_or_else(random_seed);
                }
                line.cfg = cfg;
                if line.socket.is_none() {
                    line.open();
                }
            }
            _ => {
                lines.insert(k, Line::new(cfg));
            }
        }
    }
    Ok(config.version)
}

fn write_status(id: &str, version: u64, lines: &Lines) {
    let status = Status {
        pid: std::process::id(),
        version,
        lines: lines.values().map(Line::status).collect(),
    };
    let path = status_path(id);
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec(&status).expect("a status serializes");
    if std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .is_err()
    {
        tracing::warn!("cannot write {}", path.display());
    }
}

/// `dvnet delayline ID`: serves the network's lines until SIGTERM (or the network is gone).
///
/// # Errors
/// When its configuration cannot be read at start, or the event loop cannot be set up.
pub fn run(id: &str) -> Result<(), DelayError> {
    state::check_id(id)?;
    let mut signals = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| io_err("blocking signals")(e.into()))?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| io_err("signalfd")(e.into()))?;
    let timer = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )
    .map_err(|e| io_err("timerfd")(e.into()))?;
    let mut lines = Lines::new();
    let mut version = reload(id, &mut lines)?;
    write_status(id, version, &lines);
    tracing::info!(network = id, lines = lines.len(), "delay line serving");
    let mut buf = vec![0u8; FRAME_MAX];
    let mut last_status = Instant::now();
    let mut dirty = false;
    'serve: loop {
        // (re)registered after every reload: lines come and go
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| io_err("epoll")(e.into()))?;
        epoll
            .add(signal_fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .map_err(|e| io_err("epoll")(e.into()))?;
        epoll
            .add(timer.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 1))
            .map_err(|e| io_err("epoll")(e.into()))?;
        let keys: Vec<(u32, bool)> = lines.keys().copied().collect();
        for (i, k) in keys.iter().enumerate() {
            if let Some(socket) = &lines[k].socket {
                epoll
                    .add(
                        socket.as_fd(),
                        EpollEvent::new(EpollFlags::EPOLLIN, 2 + i as u64),
                    )
                    .map_err(|e| io_err("epoll")(e.into()))?;
            }
        }
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            // the timer rings when the earliest packet is due
            let earliest = lines
                .values()
                .filter_map(|l| l.held.peek().map(|h| h.due))
                .min();
            match earliest {
                Some(due) => {
                    let at = TimeSpec::from_duration(Duration::from_nanos(due.max(1)));
                    let _ = timer.set(
                        Expiration::OneShot(at),
                        TimerSetTimeFlags::TFD_TIMER_ABSTIME,
                    );
                }
                None => {
                    let _ = timer.unset();
                }
            }
            let timeout = if dirty {
                EpollTimeout::from(250u16)
            } else {
                EpollTimeout::NONE
            };
            let n = match epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => return Err(io_err("waiting for packets")(e.into())),
            };
            let now = now_ns();
            let mut reload_now = false;
            let mut stop = false;
            for e in &events[..n] {
                match e.data() {
                    0 => {
                        while let Ok(Some(info)) = signal_fd.read_signal() {
                            match Signal::try_from(info.ssi_signo.cast_signed()) {
                                Ok(Signal::SIGHUP) => reload_now = true,
                                _ => stop = true,
                            }
                        }
                    }
                    1 => {
                        let _ = timer.wait();
                    }
                    token => {
                        if let Some(line) = usize::try_from(token - 2)
                            .ok()
                            .and_then(|i| keys.get(i))
                            .and_then(|k| lines.get_mut(k))
                        {
                            line.receive(now, &mut buf);
                            dirty = true;
                        }
                    }
                }
            }
            let now = now_ns();
            for line in lines.values_mut() {
                line.release(now);
            }
            if stop {
                break 'serve;
            }
            if reload_now {
                match reload(id, &mut lines) {
                    Ok(v) => version = v,
                    // the network is gone (down runs): nothing left to serve
                    Err(e) => {
                        tracing::info!("the configuration cannot be read ({e}): stopping");
                        break 'serve;
                    }
                }
                write_status(id, version, &lines);
                continue 'serve;
            }
            if dirty && last_status.elapsed() >= Duration::from_millis(250) {
                write_status(id, version, &lines);
                last_status = Instant::now();
                dirty = lines.values().any(|l| !l.held.is_empty());
            }
        }
    }
    // what is held, or waits to be read, goes on now
    for line in lines.values_mut() {
        line.drain(&mut buf);
    }
    write_status(id, version, &lines);
    tracing::info!(network = id, "delay line stopped");
    Ok(())
}
