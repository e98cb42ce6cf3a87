//! `dvnet plugin`: Docker's remote network driver, served on
//! `/run/docker/plugins/dvnet.sock`, so that Docker users build labs with
//! `docker network create --driver dvnet --opt net.dvnet.def=/abs/lab.json LAB` and join
//! containers to a lab's subnets with networks made by `--opt net.dvnet.attach=LAB/SUBNET`.
//!
//! - [`protocol`]: the requests and answers, as dockerd sends them.
//! - [`driver`]: what each call does, and what the driver keeps across restarts.
//! - [`adopt`]: counting a joined container's side once Docker has moved its interface.
//!
//! dockerd finds the socket by its name, lazily, and waits without a time limit for every
//! answer; it sends several calls at once. So every connection is served on its own task,
//! nothing a handler does may wait on dockerd (see [`driver`] for which calls may use the
//! Docker API), and a stale socket is replaced at start-up (one nobody answers on stalls
//! dockerd ~15 s per call).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

pub mod adopt;
pub mod driver;
pub mod protocol;

use driver::{Driver, DriverError};
use protocol as p;

/// Where dockerd looks for the plugin `dvnet`.
pub const SOCKET: &str = "/run/docker/plugins/dvnet.sock";

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(
        "another dvnet plugin answers on {0}; stop it first (or give this one another --socket)"
    )]
    Running(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Driver(#[from] DriverError),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PluginError + 'a {
    move |source| PluginError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// Makes way for the socket at `path`: refuses when a plugin answers there, removes a stale
/// socket nobody answers on.
fn make_way(path: &Path) -> Result<(), PluginError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(PluginError::Running(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(io_err("removing the stale socket", path))?;
    }
    Ok(())
}

/// Serves the driver on `socket` until SIGTERM or SIGINT, then removes the socket.
///
/// # Errors
/// When the socket cannot be made, or the driver's store cannot be read.
pub async fn serve(socket: &Path) -> Result<(), PluginError> {
    make_way(socket)?;
    let driver = Arc::new(Driver::open(driver::store_path(socket))?);
    let listener =
        tokio::net::UnixListener::bind(socket).map_err(io_err("listening on", socket))?;
    tracing::info!(socket = %socket.display(), "dvnet plugin serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io_err("catching SIGTERM for", socket))?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accepting a connection: {e}");
                        continue;
                    }
                };
                let driver = Arc::clone(&driver);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let driver = Arc::clone(&driver);
                        async move { Ok::<_, Infallible>(handle(driver, req).await) }
                    });
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!("a connection from dockerd: {e}");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    let _ = std::fs::remove_file(socket);
    driver.close();
    tracing::info!("dvnet plugin stopped");
    Ok(())
}

fn answer(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).expect("answers serialize");
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, p::CONTENT_TYPE)
        .body(Full::new(Bytes::from(bytes)))
        .expect("a valid response")
}

fn ok(body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    answer(StatusCode::OK, body)
}

fn failed(call: &str, e: &DriverError) -> Response<Full<Bytes>> {
    let err = e.chain();
    tracing::warn!(call, "{err}");
    answer(StatusCode::INTERNAL_SERVER_ERROR, &p::Error { err })
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DriverError> {
    serde_json::from_slice(body)
        .map_err(|e| DriverError::Refused(format!("a malformed request: {e}")))
}

/// Runs a driver call on a thread of its own, blocking on the runtime: building, changing
/// and removing a lab borrow across their awaits in ways the compiler cannot prove `Send`,
/// and they need not be (they run to completion, one thread each).
async fn off_task<T, Fut>(call: impl FnOnce() -> Fut + Send + 'static) -> Result<T, DriverError>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = Result<T, DriverError>>,
{
    let runtime = tokio::runtime::Handle::current();
    match tokio::task::spawn_blocking(move || runtime.block_on(call())).await {
        Ok(result) => result,
        Err(e) => Err(DriverError::Refused(format!(
            "the driver failed inside (a bug; the plugin's log says more): {e}"
        ))),
    }
}

/// One call from dockerd.
async fn handle(driver: Arc<Driver>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                &p::Error {
                    err: format!("reading the request: {e}"),
                },
            );
        }
    };
    tracing::debug!(call = %path, body = %String::from_utf8_lossy(&body).trim_end(), "call");
    let empty = serde_json::json!({});
    match path.as_str() {
        "/Plugin.Activate" => ok(&p::Activate {
            implements: vec!["NetworkDriver"],
        }),
        "/NetworkDriver.GetCapabilities" => ok(&p::Capabilities {
            scope: "local",
            connectivity_scope: "local",
        }),
        "/NetworkDriver.CreateNetwork" => match parse(&body) {
            Ok(r) => match off_task(move || async move { driver.create_network(r).await }).await {
                Ok(()) => ok(&empty),
                Err(e) => failed("CreateNetwork", &e),
            },
            Err(e) => failed("CreateNetwork", &e),
        },
        "/NetworkDriver.DeleteNetwork" => match parse(&body) {
            Ok(r) => match off_task(move || async move { driver.delete_network(r).await }).await {
                Ok(()) => ok(&empty),
                Err(e) => failed("DeleteNetwork", &e),
            },
            Err(e) => failed("DeleteNetwork", &e),
        },
        "/NetworkDriver.CreateEndpoint" => match parse(&body) {
            Ok(r) => match driver.create_endpoint(&r) {
                Ok(a) => ok(&a),
                Err(e) => failed("CreateEndpoint", &e),
            },
            Err(e) => failed("CreateEndpoint", &e),
        },
        "/NetworkDriver.Join" => match parse(&body) {
            Ok(r) => match off_task(move || async move { driver.join(&r).await }).await {
                Ok(a) => ok(&a),
                Err(e) => failed("Join", &e),
            },
            Err(e) => failed("Join", &e),
        },
        "/NetworkDriver.DeleteEndpoint" => match parse(&body) {
            Ok(r) => {
                match off_task(move || async move { driver.delete_endpoint(&r).await }).await {
                    Ok(()) => ok(&empty),
                    Err(e) => failed("DeleteEndpoint", &e),
                }
            }
            Err(e) => failed("DeleteEndpoint", &e),
        },
        "/NetworkDriver.EndpointOperInfo" => ok(&serde_json::json!({"Value": {}})),
        // Leave: Docker moves the interface back itself; it leaves the lab at DeleteEndpoint
        "/NetworkDriver.Leave"
        | "/NetworkDriver.DiscoverNew"
        | "/NetworkDriver.DiscoverDelete"
        | "/NetworkDriver.ProgramExternalConnectivity"
        | "/NetworkDriver.RevokeExternalConnectivity" => ok(&empty),
        _ => answer(
            StatusCode::NOT_FOUND,
            &p::Error {
                err: format!("{path} is not implemented"),
            },
        ),
    }
}

/// Where `dvnet plugin install` writes the unit.
pub const UNIT: &str = "/etc/systemd/system/dvnet-plugin.service";

/// Installs (or with `uninstall`, removes) the systemd unit that runs the plugin; says what
/// it did, or how to run the plugin where there is no systemd.
///
/// # Errors
/// When the unit cannot be written or systemctl fails.
pub fn install(uninstall: bool, socket: &Path) -> Result<String, PluginError> {
    let systemd = Path::new("/run/systemd/system").is_dir();
    let exe = std::env::current_exe().map_err(io_err("finding", Path::new("dvnet")))?;
    if !systemd {
        return Ok(format!(
            "no systemd here: run the plugin yourself, before dockerd needs it, e.g.\n  \
             setsid {} plugin --socket {} >>/var/log/dvnet-plugin.log 2>&1 </dev/null &\n\
             (stop it with kill PID: it removes its socket)",
            exe.display(),
            socket.display()
        ));
    }
    let systemctl = |args: &[&str]| {
        std::process::Command::new("systemctl")
            .args(args)
            .status()
            .map_err(io_err("running systemctl for", Path::new(UNIT)))
    };
    if uninstall {
        let _ = systemctl(&["disable", "--now", "dvnet-plugin.service"])?;
        match std::fs::remove_file(UNIT) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err("removing", Path::new(UNIT))(e));
            }
            _ => {}
        }
        let _ = systemctl(&["daemon-reload"])?;
        return Ok(format!("removed {UNIT}"));
    }
    let unit = unit_text(&exe, socket);
    std::fs::write(UNIT, unit).map_err(io_err("writing", Path::new(UNIT)))?;
    let _ = systemctl(&["daemon-reload"])?;
    let status = systemctl(&["enable", "--now", "dvnet-plugin.service"])?;
    Ok(if status.success() {
        format!("installed {UNIT} and started it; logs: journalctl -u dvnet-plugin")
    } else {
        format!("wrote {UNIT}, but `systemctl enable --now dvnet-plugin` failed ({status})")
    })
}

/// The systemd unit that runs the plugin: `exe plugin --socket SOCKET`, before dockerd.
#[must_use]
pub fn unit_text(exe: &Path, socket: &Path) -> String {
    format!(
        "[Unit]\nDescription=dvnet Docker network driver\nBefore=docker.service\n\
         After=network.target\n\n[Service]\nExecStart={} plugin --socket {}\nRestart=on-failure\n\
         KillSignal=SIGTERM\n\n[Install]\nWantedBy=multi-user.target\n",
        exe.display(),
        socket.display()
    )
}

/// The socket path: `--socket`, or dockerd's.
#[must_use]
pub fn socket_or_default(socket: Option<PathBuf>) -> PathBuf {
    socket.unwrap_or_else(|| PathBuf::from(SOCKET))
}
