//! `crdgen`: renders the CustomResourceDefinitions of keda-http.
//!
//! ```text
//! crdgen                          print both CRDs (InterceptorRoute, HTTPScaledObject) as YAML
//! crdgen --keda-scaledobject      print the test stand-in for KEDA's ScaledObject CRD
//! crdgen --chart-dir DIR          write DIR/templates/crds/{interceptorroutes,httpscaledobjects}.yaml
//! crdgen --chart-dir DIR --check  exit 1 if those files differ from what crdgen would write
//! ```
//!
//! The chart's CRD files are this output (`make crds`); a test in `api/tests/` checks they are
//! current.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use keda_http_api::crd;

const USAGE: &str = "usage: crdgen [--keda-scaledobject | --chart-dir DIR [--check]]";

enum Mode {
    Print,
    KedaScaledObject,
    Chart { dir: PathBuf, check: bool },
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Mode, String> {
    let mut keda = false;
    let mut chart_dir = None;
    let mut check = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--keda-scaledobject" => keda = true,
            "--chart-dir" => {
                chart_dir = Some(PathBuf::from(
                    args.next().ok_or("--chart-dir needs a directory")?,
                ));
            }
            "--check" => check = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match (keda, chart_dir, check) {
        (false, None, false) => Ok(Mode::Print),
        (true, None, false) => Ok(Mode::KedaScaledObject),
        (false, Some(dir), check) => Ok(Mode::Chart { dir, check }),
        (_, None, true) => Err("--check needs --chart-dir".to_owned()),
        (true, Some(_), _) => Err("--keda-scaledobject does not go with --chart-dir".to_owned()),
    }
}

fn print(
    crds: &[k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition],
) -> Result<(), String> {
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&crd::crd_yaml(crd).map_err(|e| e.to_string())?);
    }
    print!("{out}");
    Ok(())
}

fn write_chart(dir: &Path, check: bool) -> Result<(), String> {
    let files = crd::chart_files().map_err(|e| e.to_string())?;
    let mut stale = Vec::new();
    for (relative, text) in files {
        let path = dir.join(relative);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("crdgen: wrote {}", path.display());
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "out of date (run `make crds`): {}",
            stale.join(", ")
        ))
    }
}

fn main() -> ExitCode {
    let result = match parse_args(std::env::args().skip(1)) {
        Ok(Mode::Print) => print(&crd::crds()),
        Ok(Mode::KedaScaledObject) => print(&[crd::keda_scaled_object_crd()]),
        Ok(Mode::Chart { dir, check }) => write_chart(&dir, check),
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => Err(format!("{message}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("crdgen: {message}");
            ExitCode::FAILURE
        }
    }
}
