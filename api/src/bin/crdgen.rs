//! Prints the CustomResourceDefinitions of keda-http as YAML.
fn main() {}
