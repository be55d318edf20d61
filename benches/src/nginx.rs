//! nginx as the reference reverse proxy: one process (no master), one worker's event loop,
//! upstream keep-alive, the same forwarding headers our interceptor adds, no access log.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;

use crate::process::{Proc, pinned, which};

/// The configuration of a single-process nginx on `listen` proxying to `upstream` with a
/// keep-alive pool of `keepalive` idle connections. Every path nginx writes is under `dir`.
pub fn config(dir: &Path, listen: SocketAddr, upstream: SocketAddr, keepalive: u32) -> String {
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
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;
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
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_buffering off;
        }}
    }}
}}
"
    )
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
    let Some(nginx) = which("nginx") else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir)?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(dir, listen, upstream, keepalive))
        .with_context(|| format!("write {}", conf.display()))?;
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
}
