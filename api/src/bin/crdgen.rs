//! `crdgen`: prints the CustomResourceDefinitions of keda-http as YAML documents.
//!
//! The chart's `templates/crds/` files are this output; a test checks they are current.

fn main() -> std::process::ExitCode {
    let mut out = String::new();
    for crd in keda_http_api::crd::crds() {
        match keda_http_api::crd::crd_yaml(&crd) {
            Ok(yaml) => {
                out.push_str("---\n");
                out.push_str(&yaml);
            }
            Err(e) => {
                eprintln!("crdgen: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    print!("{out}");
    std::process::ExitCode::SUCCESS
}
