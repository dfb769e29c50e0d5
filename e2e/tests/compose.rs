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

/// `docker-compose config` of the base file with `extra` files on top:
/// anchors merged and `.env` applied.
fn resolved_compose_with(extra: &[&str]) -> Yaml {
    let mut cmd = Command::new("docker-compose");
    for file in std::iter::once(&"docker-compose.yml").chain(extra) {
        cmd.args(["-f", file]);
    }
    let out = match cmd.arg("config").current_dir(workspace_root()).output() {
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

fn resolved_compose() -> Yaml {
    resolved_compose_with(&[])
}

#[test]
fn every_variable_compose_sets_is_a_setting_of_its_binary() {
    for compose in [
        resolved_compose(),
        resolved_compose_with(&["docker-compose.collector.yml"]),
    ] {
        check_settings(&compose);
    }
}

fn check_settings(compose: &Yaml) {
    for (service, binary) in [
        ("api", "api"),
        ("worker", "worker"),
        ("weather-stub", "weather-stub"),
        ("console", "console"),
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
        "console",
        "prometheus",
    ] {
        assert!(
            !compose["services"][service]["healthcheck"].is_badvalue(),
            "{service} has no healthcheck"
        );
    }
}

#[test]
fn each_service_builds_its_own_image_tag() {
    let compose = resolved_compose();
    let mut tags = Vec::new();
    for service in ["api", "worker", "weather-stub", "console"] {
        let svc = &compose["services"][service];
        assert!(!svc["build"].is_badvalue(), "{service} is built here");
        let image = svc["image"].as_str().expect("an image tag").to_owned();
        assert!(!tags.contains(&image), "{service} shares the tag {image}");
        tags.push(image);
        let args = &svc["build"]["args"];
        assert!(
            args["RUST_VERSION"].is_badvalue() && !args["BUILD_RUST_VERSION"].is_badvalue(),
            "RUST_VERSION is set by rust images and devcontainers: {service} must not read it"
        );
    }
}

#[test]
fn with_the_collector_file_every_service_sends_otlp_after_it_starts() {
    let base = resolved_compose();
    assert!(base["services"]["otel-collector"].is_badvalue());
    // Every service that sends spans sends them to Zipkin without it.
    let traced: Vec<String> = base["services"]
        .as_hash()
        .expect("services")
        .iter()
        .filter(|(_, svc)| svc["environment"]["OTEL_TRACES_EXPORTER"].as_str() == Some("zipkin"))
        .filter_map(|(name, _)| name.as_str().map(str::to_owned))
        .collect();
    for service in ["api", "worker", "weather-stub", "alerts"] {
        assert!(
            traced.iter().any(|t| t == service),
            "{service} sends no spans: {traced:?}"
        );
    }
    let merged = resolved_compose_with(&["docker-compose.collector.yml"]);
    for service in &traced {
        let svc = &merged["services"][service.as_str()];
        assert_eq!(
            svc["environment"]["OTEL_TRACES_EXPORTER"].as_str(),
            Some("otlp")
        );
        assert!(
            !svc["depends_on"]["otel-collector"].is_badvalue(),
            "{service} must start after the Collector"
        );
    }
}

#[test]
fn grafana_shows_ratios_as_percentages() {
    let path = workspace_root().join("grafana/dashboards/traced-jobs.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let mut ratios = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            if !legend.contains("ratio") {
                continue;
            }
            ratios += 1;
            let unit = panel["fieldConfig"]["overrides"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| o["matcher"]["options"] == legend)
                .flat_map(|o| o["properties"].as_array().cloned().unwrap_or_default())
                .find(|p| p["id"] == "unit")
                .map(|p| p["value"].clone())
                .unwrap_or_else(|| panel["fieldConfig"]["defaults"]["unit"].clone());
            assert_eq!(unit, "percentunit", "{legend:?} in {:?}", panel["title"]);
        }
    }
    assert!(ratios > 0, "the cache hit ratio panel is gone");
}

#[test]
fn published_ports_stay_on_this_machine_and_admin_endpoints_stay_closed() {
    let merged = resolved_compose_with(&["docker-compose.collector.yml"]);
    let services = merged["services"].as_hash().expect("services");
    let mut published = 0;
    for (name, svc) in services {
        for port in svc["ports"].as_vec().into_iter().flatten() {
            published += 1;
            let port = port.as_str().unwrap_or_default();
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name:?} publishes {port} beyond this machine"
            );
        }
    }
    assert!(published >= 5, "ports went missing");
    let prometheus = &merged["services"]["prometheus"]["command"];
    assert!(
        !prometheus
            .as_vec()
            .into_iter()
            .flatten()
            .any(|a| a.as_str() == Some("--web.enable-lifecycle")),
        "anyone reaching Prometheus could stop it"
    );
    let grafana = &merged["services"]["grafana"]["environment"];
    assert_ne!(
        grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"].as_str(),
        Some("Admin"),
        "anonymous visitors must not administer Grafana"
    );
    assert!(grafana["GF_AUTH_DISABLE_LOGIN_FORM"].is_badvalue());
}
