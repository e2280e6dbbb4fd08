//! GPUs without a GPU: golden OCI config fragments for whole and fractional GPUs from a fake
//! driver inventory, and the MPS daemon manager driven against a fake `nvidia-cuda-mps-control`
//! that records what it is asked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use sandpit_image::IdShift;
use sandpit_runtime::GpuAttachment;
use sandpit_runtime::gpu::inject::{MPS_PIPE_IN_SANDBOX, fragment};
use sandpit_runtime::gpu::{DriverFiles, MpsManager};
use sandpit_runtime::local::oci::{BundleParams, build_spec, to_json};
use sandpit_types::{ByteSize, MilliCpu, SandboxId};
use serde_json::{Value, json};

fn driver() -> DriverFiles {
    DriverFiles {
        files: vec![
            "/usr/bin/nvidia-smi".into(),
            "/usr/lib/x86_64-linux-gnu/libcuda.so.1".into(),
            "/usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05".into(),
            "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.95.05".into(),
        ],
        uvm_major: Some(509),
    }
}

fn gpu(index: u32, fraction: u32) -> GpuAttachment {
    GpuAttachment {
        index,
        minor: index,
        uuid: format!("GPU-0000000{index}-aaaa-bbbb-cccc-dddddddddddd"),
        fraction,
        memory_limit: ByteSize(141 * (1 << 30) * u64::from(fraction) / 100),
        simulated: false,
    }
}

/// The GPU-related parts of a whole OCI config.
fn gpu_parts(gpus: &[GpuAttachment]) -> Value {
    let pipe = PathBuf::from("/var/lib/sandpit/runtime/mps/GPU-x/pipe");
    let frag = fragment(gpus, Some(&driver()), &|_| Some(pipe.clone())).unwrap();
    let params = BundleParams {
        rootfs: "/r/rootfs".into(),
        init_binary: "/r/bin/init".into(),
        init_args: vec![],
        env: vec!["PATH=/bin".into()],
        hostname: "h".into(),
        cpu: MilliCpu(1000),
        memory: ByteSize::gib(1),
        limit_swap: true,
        pids: 64,
        ids: IdShift::new(1_000_000, 65_536).unwrap(),
        cgroups_path: "/sandpit/x".into(),
        nofile: 1024,
        gpu: frag,
    };
    let cfg: Value = serde_json::from_slice(&to_json(&build_spec(&params).unwrap()).unwrap()).unwrap();
    let mounts: Vec<Value> = cfg["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m["destination"].as_str().is_some_and(|d| d.starts_with("/usr") || d == MPS_PIPE_IN_SANDBOX)
        })
        .cloned()
        .collect();
    let env: Vec<Value> = cfg["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e.as_str().is_some_and(|e| {
                e.starts_with("NVIDIA") || e.starts_with("CUDA") || e.starts_with("SANDPIT_GPU")
            })
        })
        .cloned()
        .collect();
    let rules: Vec<Value> = cfg["linux"]["resources"]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["major"] == 195 || r["major"] == 509)
        .cloned()
        .collect();
    json!({"devices": cfg["linux"]["devices"], "cgroup_allow": rules, "mounts": mounts, "env": env})
}

fn golden(name: &str, got: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    let text = serde_json::to_string_pretty(got).unwrap() + "\n";
    if std::env::var_os("SANDPIT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(want == text, "{name} differs from the golden file (SANDPIT_UPDATE_GOLDEN=1 to accept):\n{text}");
}

#[test]
fn a_whole_gpu_gets_its_device_only_plus_the_control_devices_and_driver_files() {
    let parts = gpu_parts(&[gpu(3, 100)]);
    golden("gpu-whole.json", &parts);
    let paths: Vec<&str> =
        parts["devices"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia3"]);
    assert!(!paths.iter().any(|p| p.contains("nvidia-caps")));
    assert!(
        parts["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["options"].as_array().unwrap().contains(&json!("ro")))
    );
}

#[test]
fn a_quarter_gpu_adds_the_mps_pipe_and_its_share() {
    let parts = gpu_parts(&[gpu(1, 25)]);
    golden("gpu-quarter.json", &parts);
    let env: Vec<&str> = parts["env"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(env.contains(&"CUDA_MPS_PIPE_DIRECTORY=/run/nvidia-mps"));
    assert!(env.contains(&"SANDPIT_GPU_SHARE=25"));
}

#[test]
fn two_whole_gpus_get_both_devices_and_a_simulated_gpu_gets_none() {
    let parts = gpu_parts(&[gpu(0, 100), gpu(1, 100)]);
    golden("gpu-two-whole.json", &parts);
    let sim = GpuAttachment { simulated: true, ..gpu(0, 50) };
    let f = fragment(&[sim], None, &|_| None).unwrap();
    assert!(f.devices.is_empty() && f.mounts.is_empty());
    assert!(f.env.contains(&"SANDPIT_GPU_SIMULATED=1".to_string()));
    // A real GPU on a host without a driver is refused with a clear error.
    let err = fragment(&[gpu(0, 100)], None, &|_| None).unwrap_err();
    assert!(err.to_string().contains("no NVIDIA driver"), "{err}");
}

#[tokio::test]
async fn the_mps_daemon_starts_with_the_share_as_defaults_and_stops_with_its_last_user() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let fake = dir.path().join("nvidia-cuda-mps-control");
    // Records its arguments, environment and stdin; `-d` creates the control pipe, `quit`
    // removes it, as the real daemon does.
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nin=$(cat)\necho \"args=$* gpu=$CUDA_VISIBLE_DEVICES in=$in\" >> {log}\n\
             [ \"$1\" = -d ] && touch \"$CUDA_MPS_PIPE_DIRECTORY/control\"\n\
             [ \"$in\" = quit ] && rm -f \"$CUDA_MPS_PIPE_DIRECTORY/control\"\nexit 0\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = MpsManager::new(dir.path().join("mps"), &fake);
    let g = gpu(2, 50);
    let (a, b) = (SandboxId::generate(), SandboxId::generate());
    let pipe = m.attach(a, &g).await.unwrap();
    assert!(pipe.join("control").exists());
    m.attach(b, &g).await.unwrap();
    m.detach(a, &g).await.unwrap();
    assert!(pipe.join("control").exists(), "still used by b");
    m.detach(b, &g).await.unwrap();
    assert!(!pipe.join("control").exists(), "stopped with its last user");
    let calls = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    let mib = 141 * 1024 / 2;
    assert_eq!(
        lines,
        [
            format!("args=-d gpu={} in=", g.uuid),
            format!("args= gpu={} in=set_default_device_pinned_mem_limit 0 {mib}M", g.uuid),
            format!("args= gpu={} in=set_default_active_thread_percentage 50", g.uuid),
            format!("args= gpu={} in=quit", g.uuid),
        ]
    );
}
