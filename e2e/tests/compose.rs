//! The Compose file against the binaries: every variable it sets must be a
//! setting the binary reads, and workers must stay scalable.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::project_binary;
use yaml_rust2::{Yaml, YamlLoader};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate sits in the workspace")
        .to_path_buf()
}

/// `docker-compose config`: the file with anchors merged and `.env` applied.
fn resolved_compose() -> Yaml {
    let out = match Command::new("docker-compose")
        .arg("config")
        .current_dir(workspace_root())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "docker-compose is missing: install it (Debian: apt-get install -y docker-compose); \
             no Docker engine is needed"
        ),
        Err(e) => panic!("running docker-compose config: {e}"),
    };
    assert!(
        out.status.success(),
        "docker-compose config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    YamlLoader::load_from_str(&text)
        .expect("docker-compose config prints YAML")
        .remove(0)
}

#[test]
fn every_variable_compose_sets_is_a_setting_of_its_binary() {
    let compose = resolved_compose();
    for (service, binary) in [
        ("api", "api"),
        ("worker", "worker"),
        ("weather-stub", "weather-stub"),
    ] {
        let svc = &compose["services"][service];
        assert!(!svc.is_badvalue(), "service {service} is missing");
        let command: Vec<&str> = svc["command"]
            .as_vec()
            .expect("command")
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert_eq!(command.first(), Some(&binary), "{service} runs {command:?}");

        let bin = project_binary(binary).expect("binary built");
        let help = Command::new(&bin).arg("--help").output().expect("--help");
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        let env = svc["environment"].as_hash().expect("environment");
        assert!(!env.is_empty());
        for key in env.keys().filter_map(Yaml::as_str) {
            // RUST_LOG is read by the log filter and named in --help's text.
            let accepted = help.contains(&format!("[env: {key}="))
                || (key == "RUST_LOG" && help.contains("RUST_LOG"));
            assert!(
                accepted,
                "{service} sets {key}, which `{binary} --help` does not list"
            );
        }
    }
}

#[test]
fn workers_can_be_scaled() {
    let compose = resolved_compose();
    let worker = &compose["services"]["worker"];
    assert!(
        worker["container_name"].is_badvalue(),
        "a container_name prevents --scale"
    );
    assert!(worker["ports"].is_badvalue(), "host ports prevent --scale");
    for service in [
        "redis",
        "zipkin",
        "api",
        "worker",
        "weather-stub",
        "prometheus",
    ] {
        assert!(
            !compose["services"][service]["healthcheck"].is_badvalue(),
            "{service} has no healthcheck"
        );
    }
}
