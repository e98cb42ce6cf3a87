//! `dvnet ui`: a page that shows a running network — its picture ([`crate::graph`]) with,
//! live, each link's packet and byte rates, drops by reason, rule hits and the impairments
//! in force — read from the maps; a click on a link shows its last drops with what the
//! datapath said of them (a capture of drops only, [`crate::capture`], runs while the page
//! is served). Served by dvnet itself, on localhost by default, read-only: every request is
//! a GET that reads.
//!
//! - `/`: the page (HTML, its script inline, the picture as SVG inline);
//! - `/api/stats`: `dvnet stats --json`, with the time it was read, and each link's rates
//!   over the last second (read by the server every second);
//! - `/api/drops?link=ID`: the last [`KEPT_DROPS`] drops of a link;
//! - `/api/network`: the network's name, id, and its impairments and links down in words.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::plan::Plan;

/// Drops kept per link for the page.
pub const KEPT_DROPS: usize = 50;

const PAGE: &str = include_str!("page.html");

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
}

/// A drop, as the page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Drop {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub packet: String,
    pub verdict: String,
}

/// Per-link rates over the last sampling second.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rate {
    pub rx_pps: f64,
    pub tx_pps: f64,
    pub rx_bps: f64,
    pub tx_bps: f64,
}

/// The last two readings of the counters, a second apart.
#[derive(Default)]
struct Samples {
    last: Option<(std::time::Instant, crate::stats::Snapshot)>,
    rates: BTreeMap<u32, Rate>,
}

/// What the server shares: the network's plan, the counters' rates and the drops seen.
struct Shared {
    plan: Plan,
    samples: Mutex<Samples>,
    drops: Mutex<BTreeMap<u32, VecDeque<Drop>>>,
    /// Why drops are not shown, if they are not.
    drops_unavailable: Mutex<Option<String>>,
}

/// Serves the page of `plan`'s network on `addr` until Ctrl-C or SIGTERM; `ready` is called
/// with the address once it listens.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    plan: Plan,
    addr: SocketAddr,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), UiError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| UiError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| UiError::Listen { addr, source })?;
    let shared = Arc::new(Shared {
        plan,
        samples: Mutex::new(Samples::default()),
        drops: Mutex::new(BTreeMap::new()),
        drops_unavailable: Mutex::new(None),
    });
    // the drops, from a capture of drops only on every link
    let capturer = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            let request = crate::capture::Request {
                all: true,
                drops_only: true,
                ..crate::capture::Request::default()
            };
            let keep = Arc::clone(&shared);
            let sink = crate::capture::Sink::Each(Box::new(move |r| {
                let mut drops = keep
                    .drops
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let list = drops.entry(r.link).or_default();
                if list.len() == KEPT_DROPS {
                    list.pop_front();
                }
                list.push_back(Drop {
                    time_ms: r.timestamp_ns / 1_000_000,
                    packet: r.summary.clone(),
                    verdict: r.verdict.to_owned(),
                });
            }));
            if let Err(e) = crate::capture::capture(&shared.plan, &request, sink, |_| {}) {
                *shared
                    .drops_unavailable
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
            }
        })
    };
    // the rates, from a reading every second (a page shows them from its first request)
    let sampler = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                every.tick().await;
                let Ok(now) = crate::stats::read(&shared.plan) else {
                    continue;
                };
                let at = std::time::Instant::now();
                let mut samples = shared
                    .samples
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some((then, before)) = &samples.last {
                    let secs = at.duration_since(*then).as_secs_f64().max(1e-3);
                    let old: BTreeMap<u32, &crate::stats::LinkRow> =
                        before.links.iter().map(|l| (l.link, l)).collect();
                    #[expect(clippy::cast_precision_loss, reason = "rates, shown")]
                    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
                    samples.rates = now
                        .links
                        .iter()
                        .filter_map(|l| {
                            let o = old.get(&l.link)?;
                            Some((
                                l.link,
                                Rate {
                                    rx_pps: rate(l.rx.packets, o.rx.packets),
                                    tx_pps: rate(l.tx.packets, o.tx.packets),
                                    rx_bps: 8.0 * rate(l.rx.bytes, o.rx.bytes),
                                    tx_bps: 8.0 * rate(l.tx.bytes, o.tx.bytes),
                                },
                            ))
                        })
                        .collect();
                }
                samples.last = Some((at, now));
            }
        })
    };
    ready(bound);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(handle(&shared, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
            () = terminated(term.as_mut()) => break,
            _ = tick.tick() => {
                // Ctrl-C: the capture's handler has it (and stops); so do we
                if crate::capture::stopping() {
                    break;
                }
            }
        }
    }
    sampler.abort();
    crate::capture::stop();
    let _ = tokio::task::spawn_blocking(move || capturer.join()).await;
    Ok(())
}

/// SIGTERM, or never when it cannot be caught.
async fn terminated(term: Option<&mut tokio::signal::unix::Signal>) {
    match term {
        Some(t) => {
            t.recv().await;
        }
        None => std::future::pending().await,
    }
}

fn respond(status: StatusCode, kind: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, kind)
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .body(Full::new(body.into()))
        .expect("a valid response")
}

fn json(value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(v) => respond(StatusCode::OK, "application/json", v),
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

fn handle(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "read-only: GET only",
        );
    }
    let plan = &shared.plan;
    match req.uri().path() {
        "/" => {
            let svg = crate::graph::render(plan, crate::graph::Format::Svg);
            let page = PAGE
                .replace("{{TITLE}}", &html(&plan.name))
                .replace("{{SVG}}", &svg);
            respond(StatusCode::OK, "text/html; charset=utf-8", page)
        }
        "/api/stats" => match crate::stats::read(plan) {
            Ok(snap) => {
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                let rates = shared
                    .samples
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .rates
                    .clone();
                json(&serde_json::json!({"time_ms": ms, "stats": snap, "rates": rates}))
            }
            Err(e) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("reading the counters: {e} (is the network still up?)"),
            ),
        },
        "/api/network" => json(&serde_json::json!({
            "name": plan.name,
            "id": plan.id,
            "datapath": plan.datapath,
            "impairments": crate::render::impairments(plan).trim(),
            "links": plan.links.iter().map(|l| serde_json::json!({
                "link": l.id,
                "node": plan.nodes[l.node].name,
                "subnet": plan.subnets[l.subnet].name,
                "address": l.label_address(),
                "impair": (!l.into_node.is_none() || !l.from_node.is_none()).then(|| {
                    let mut i = l.into_node.impair.to_string();
                    if !l.from_node.is_none() {
                        i = format!("{i} / sent: {}", l.from_node.impair);
                    }
                    i
                }),
                "down": l.down,
            })).collect::<Vec<_>>(),
        })),
        "/api/drops" => {
            let link = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("link=")))
                .and_then(|v| v.parse::<u32>().ok());
            let Some(link) = link else {
                return respond(StatusCode::BAD_REQUEST, "text/plain", "?link=ID");
            };
            let drops: Vec<Drop> = shared
                .drops
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&link)
                .map(|d| d.iter().rev().cloned().collect())
                .unwrap_or_default();
            let unavailable = shared
                .drops_unavailable
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            json(&serde_json::json!({"link": link, "drops": drops, "unavailable": unavailable}))
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found"),
    }
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
