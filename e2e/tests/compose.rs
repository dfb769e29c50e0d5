//! The Compose file against the binaries: every variable it sets must be a
//! setting the binary reads, and workers must stay scalable; with the
//! overlays (the Collector's, the Redis Cluster's) too.

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

const COLLECTOR: &str = "docker-compose.collector.yml";
const CLUSTER: &str = "docker-compose.cluster.yml";

/// The overlays on the base file, alone and together, as they are run.
const OVERLAYS: &[&[&str]] = &[&[], &[COLLECTOR], &[CLUSTER], &[COLLECTOR, CLUSTER]];

#[test]
fn every_variable_compose_sets_is_a_setting_of_its_binary() {
    for extra in OVERLAYS {
        check_settings(&resolved_compose_with(extra), extra);
    }
}

fn check_settings(compose: &Yaml, files: &[&str]) {
    for (service, binary) in [
        ("api", "api"),
        ("worker", "worker"),
        ("weather-stub", "weather-stub"),
        ("console", "console"),
        ("alerts", "alerts"),
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
                "{service} sets {key}, which `{binary} --help` does not list \
                 (docker-compose.yml with {files:?})"
            );
        }
    }
}

#[test]
fn workers_can_be_scaled() {
    for extra in OVERLAYS {
        let compose = resolved_compose_with(extra);
        let worker = &compose["services"]["worker"];
        assert!(
            worker["container_name"].is_badvalue(),
            "a container_name prevents --scale ({extra:?})"
        );
        assert!(
            worker["ports"].is_badvalue(),
            "host ports prevent --scale ({extra:?})"
        );
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
                "{service} has no healthcheck ({extra:?})"
            );
        }
    }
}

/// The cluster's nodes, as the overlay names them.
const CLUSTER_NODES: [&str; 6] = [
    "redis-node-1",
    "redis-node-2",
    "redis-node-3",
    "redis-node-4",
    "redis-node-5",
    "redis-node-6",
];

fn strings(yaml: &Yaml) -> Vec<&str> {
    yaml.as_vec()
        .into_iter()
        .flatten()
        .filter_map(Yaml::as_str)
        .collect()
}

/// Whether `args` holds `flag` followed by `value`.
fn has_flag(args: &[&str], flag: &str, value: &str) -> bool {
    args.windows(2).any(|w| w == [flag, value])
}

#[test]
fn with_the_cluster_file_every_redis_user_reads_every_node_once_the_cluster_is_formed() {
    let base = resolved_compose();
    let merged = resolved_compose_with(&[CLUSTER]);
    let services = &merged["services"];

    // The one server runs no container (it stays defined: the base file's
    // services depend on it).
    assert_eq!(services["redis"]["scale"].as_i64(), Some(0));

    let image = base["services"]["redis"]["image"].as_str().expect("image");
    for node in CLUSTER_NODES {
        let svc = &services[node];
        assert!(!svc.is_badvalue(), "{node} is missing");
        assert_eq!(svc["image"].as_str(), Some(image), "{node}'s image");
        assert!(
            !svc["healthcheck"].is_badvalue(),
            "{node} has no healthcheck"
        );
        assert!(svc["ports"].is_badvalue(), "{node} publishes a port");
        let args = strings(&svc["command"]);
        for (flag, value) in [
            ("--cluster-enabled", "yes"),
            ("--appendonly", "yes"),
            ("--cluster-node-timeout", "5000"),
            // Clients are sent to names that resolve on the Compose network.
            ("--cluster-announce-hostname", node),
            ("--cluster-preferred-endpoint-type", "hostname"),
        ] {
            assert!(has_flag(&args, flag, value), "{node} runs {args:?}");
        }
    }

    let init = &services["redis-cluster-init"];
    assert_eq!(init["image"].as_str(), Some(image));
    assert_eq!(init["restart"].as_str(), Some("no"), "a one-shot service");
    let script = strings(&init["command"]).join(" ");
    for part in ["--cluster create", "--cluster-replicas 1", "--cluster-yes"] {
        assert!(script.contains(part), "the init runs no `{part}`");
    }
    for node in CLUSTER_NODES {
        assert!(
            script.contains(&format!("{node}:6379")),
            "{node} is left out"
        );
        assert_eq!(
            init["depends_on"][node]["condition"].as_str(),
            Some("service_healthy"),
            "the init must wait for {node}"
        );
    }

    let every_node: Vec<String> = CLUSTER_NODES
        .iter()
        .map(|n| format!("redis://{n}:6379"))
        .collect();
    for (service, reads_the_queue) in [
        ("api", true),
        ("worker", true),
        ("console", true),
        ("alerts", false),
    ] {
        let svc = &services[service];
        let url = svc["environment"]["REDIS_URL"].as_str().expect("REDIS_URL");
        let urls: Vec<&str> = url.split(',').collect();
        assert_eq!(urls, every_node, "{service}'s REDIS_URL");
        assert_eq!(
            svc["depends_on"]["redis-cluster-init"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{service} must start after the cluster is formed"
        );
        let shards = svc["environment"]["QUEUE_SHARDS"].as_str();
        if reads_the_queue {
            assert_eq!(shards, Some("3"), "{service}: one shard per master");
        } else {
            assert_eq!(shards, None, "{service} reads no queue");
        }
    }
    // Nothing is left on the one server.
    for (name, svc) in services.as_hash().expect("services") {
        for (key, value) in svc["environment"].as_hash().into_iter().flatten() {
            let value = value.as_str().unwrap_or_default();
            assert!(
                !value.contains("redis://redis:"),
                "{name:?} still sets {key:?} to the single server: {value}"
            );
        }
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
    let merged = resolved_compose_with(&[COLLECTOR]);
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
    // No Redis node publishes a port either.
    for extra in &OVERLAYS[1..] {
        let merged = resolved_compose_with(extra);
        let services = merged["services"].as_hash().expect("services");
        let mut published = 0;
        for (name, svc) in services {
            for port in svc["ports"].as_vec().into_iter().flatten() {
                published += 1;
                let port = port.as_str().unwrap_or_default();
                assert!(
                    port.starts_with("127.0.0.1:"),
                    "{name:?} publishes {port} beyond this machine ({extra:?})"
                );
            }
        }
        assert!(published >= 5, "ports went missing ({extra:?})");
    }
    let merged = resolved_compose_with(&[COLLECTOR]);
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

#[test]
fn the_services_spans_go_to_the_console_which_keeps_them_on_a_volume_and_feeds_zipkin() {
    for extra in OVERLAYS {
        let compose = resolved_compose_with(extra);
        let console = &compose["services"]["console"];
        let env = &console["environment"];
        let dir = env["CONSOLE_DATA_DIR"].as_str().expect("CONSOLE_DATA_DIR");
        let mounted = console["volumes"].as_vec().into_iter().flatten().any(|v| {
            // Short or long syntax, as the Compose version resolves it.
            v.as_str().is_some_and(|s| {
                s == format!("console-data:{dir}") || s == format!("console-data:{dir}:rw")
            }) || (v["source"].as_str() == Some("console-data")
                && v["target"].as_str() == Some(dir))
        });
        assert!(
            mounted,
            "the data directory is a volume ({extra:?}): {console:?}"
        );
        assert!(!compose["volumes"]["console-data"].is_badvalue());
        assert_eq!(
            env["CONSOLE_FORWARD_URL"].as_str(),
            Some("http://zipkin:9411/api/v2/spans")
        );
        assert!(
            env["CONSOLE_ZIPKIN_URL"].is_badvalue(),
            "it stores, not reads"
        );
        let listen = env["CONSOLE_LISTEN"].as_str().expect("CONSOLE_LISTEN");
        let port = listen.rsplit(':').next().expect("a port");
        for service in ["api", "worker", "weather-stub", "alerts"] {
            let e = &compose["services"][service]["environment"];
            if e["OTEL_TRACES_EXPORTER"].as_str() == Some("zipkin") {
                assert_eq!(
                    e["OTEL_EXPORTER_ZIPKIN_ENDPOINT"].as_str(),
                    Some(format!("http://console:{port}/api/v2/spans").as_str()),
                    "{service} ({extra:?})"
                );
            }
        }
    }
    // Through the Collector, the spans reach the console too.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let collector =
        std::fs::read_to_string(root.join("otel-collector/config.yaml")).expect("the config");
    let config = &YamlLoader::load_from_str(&collector).expect("yaml")[0];
    assert_eq!(
        config["exporters"]["zipkin"]["endpoint"].as_str(),
        Some("http://console:9412/api/v2/spans")
    );
}
