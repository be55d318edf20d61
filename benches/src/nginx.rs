//! nginx as the reference reverse proxy: one process (no master), one worker's event loop,
//! upstream keep-alive, the same forwarding headers our interceptor adds, no access log. For
//! the memory suite, [`memory_config`]: a master with one worker that also holds requests on
//! a silent upstream.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;

use crate::process::{Proc, pinned, which};

/// The forwarding of every proxied location: upstream keep-alive and the same forwarding
/// headers our interceptor adds, unbuffered.
const FORWARDING: &str = "proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_buffering off;";

/// The `http` block lines both configurations share: no access log, every temp path under
/// `dir`, unlimited requests per client connection.
fn http_common(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;"
    )
}

/// The configuration of a single-process nginx on `listen` proxying to `upstream` with a
/// keep-alive pool of `keepalive` idle connections. Every path nginx writes is under `dir`.
pub fn config(dir: &Path, listen: SocketAddr, upstream: SocketAddr, keepalive: u32) -> String {
    let http_common = http_common(dir);
    let dir = dir.display();
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 16384;
}}
http {{
{http_common}
    keepalive_timeout 120s;
    upstream backend {{
        server {upstream};
        keepalive {keepalive};
        keepalive_requests 10000000;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://backend;
            {FORWARDING}
        }}
    }}
}}
"
    )
}

/// The memory peer: `daemon off`, a master with one worker (its RSS is the sum of both),
/// room for `connections` client connections each with an upstream one. Host `hello_host`
/// goes to `hello` (keep-alive pool), host `silent_host` to `silent`, an upstream that
/// accepts and never answers, with read/send timeouts of an hour so that nginx holds those
/// requests. Every path nginx writes is under `dir`.
pub fn memory_config(
    dir: &Path,
    listen: SocketAddr,
    (hello_host, hello): (&str, SocketAddr),
    (silent_host, silent): (&str, SocketAddr),
    connections: usize,
) -> String {
    let http_common = http_common(dir);
    let dir = dir.display();
    let worker_connections = 2 * connections + 512;
    let nofile = 2 * connections + 1024;
    format!(
        "daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections {worker_connections};
}}
http {{
{http_common}
    keepalive_timeout 600s;
    client_header_timeout 600s;
    upstream hello {{
        server {hello};
        keepalive 64;
    }}
    upstream silent {{
        server {silent};
    }}
    server {{
        listen {listen} backlog=16384;
        server_name {hello_host};
        location / {{
            proxy_pass http://hello;
            {FORWARDING}
        }}
    }}
    server {{
        listen {listen};
        server_name {silent_host};
        location / {{
            proxy_pass http://silent;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            {FORWARDING}
        }}
    }}
}}
"
    )
}

/// An nginx master whose workers are killed with it.
#[derive(Debug)]
pub struct Nginx {
    proc: Proc,
}

impl Nginx {
    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The master process (to probe it).
    pub fn proc_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// RSS of the master and its workers (KiB).
    pub fn rss_kib(&self) -> Option<u64> {
        crate::procfs::rss_with_children_kib(self.proc.pid())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGKILL to the master leaves its workers running (and listening): end them first.
        for child in crate::procfs::children(self.proc.pid()) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &child.to_string()])
                .status();
        }
    }
}

/// Starts nginx with [`memory_config`] under `dir`, pinned to `cpu`. `None` when nginx is not
/// installed.
pub fn start_memory_peer(
    dir: &Path,
    listen: SocketAddr,
    hello: (&str, SocketAddr),
    silent: (&str, SocketAddr),
    connections: usize,
    cpu: Option<usize>,
) -> anyhow::Result<Option<Nginx>> {
    let text = memory_config(dir, listen, hello, silent, connections);
    Ok(launch(dir, &text, cpu)?.map(|proc| Nginx { proc }))
}

/// Starts nginx with [`config`] under `dir`, pinned to `cpu`. `None` when nginx is not
/// installed.
pub fn start(
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    keepalive: u32,
    cpu: Option<usize>,
) -> anyhow::Result<Option<Proc>> {
    launch(dir, &config(dir, listen, upstream, keepalive), cpu)
}

/// Writes `text` to `dir/nginx.conf` and starts nginx on it.
fn launch(dir: &Path, text: &str, cpu: Option<usize>) -> anyhow::Result<Option<Proc>> {
    let Some(nginx) = which("nginx") else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir)?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, text).with_context(|| format!("write {}", conf.display()))?;
    let mut cmd = pinned(nginx, cpu);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"));
    Proc::spawn("nginx", cmd, Some(&dir.join("stdout.log"))).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_everything_in_its_directory_and_upstream_alive() {
        let listen: SocketAddr = "127.0.0.1:18080".parse().expect("addr");
        let upstream: SocketAddr = "127.0.0.1:18081".parse().expect("addr");
        let text = config(Path::new("/tmp/x"), listen, upstream, 64);
        assert!(text.contains("listen 127.0.0.1:18080;"));
        assert!(text.contains("server 127.0.0.1:18081;"));
        assert!(text.contains("keepalive 64;"));
        assert!(text.contains("proxy_http_version 1.1;"));
        assert!(text.contains("proxy_set_header Connection \"\";"));
        assert!(text.contains("master_process off;"));
        assert!(text.contains("pid /tmp/x/nginx.pid;"));
        // Balanced braces.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn memory_config_holds_on_the_silent_upstream_with_room_for_every_connection() {
        let listen: SocketAddr = "127.0.0.1:18080".parse().expect("addr");
        let hello: SocketAddr = "127.0.0.1:18081".parse().expect("addr");
        let silent: SocketAddr = "127.0.0.1:18082".parse().expect("addr");
        let text = memory_config(
            Path::new("/tmp/x"),
            listen,
            ("a.example", hello),
            ("b.example", silent),
            10_000,
        );
        assert!(text.contains("master_process on;"));
        assert!(text.contains("worker_processes 1;"));
        assert!(text.contains("worker_connections 20512;"));
        assert!(text.contains("server_name b.example;"));
        assert!(text.contains("server 127.0.0.1:18082;"));
        assert!(text.contains("proxy_read_timeout 3600s;"));
        assert!(text.contains("keepalive_timeout 600s;"));
        assert!(text.contains("client_header_timeout 600s;"));
        // The accept queue takes a burst of BENCH_HELD connections.
        assert!(text.contains("listen 127.0.0.1:18080 backlog=16384;"));
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }
}
