//! The per-sandbox disk: a sparse ext4 image, attached to a loop device and mounted; the overlay's
//! upper and work directories live on it.
//!
//! Why a filesystem per sandbox: the disk limit must hold on every host, and project quotas are
//! not available everywhere (the development hosts' kernels are built without quota support, and
//! ext4 quota is bypassed by the overlay's root-owned writes). A filesystem of the sandbox's size
//! makes "disk full" the kernel's plain `ENOSPC` inside the sandbox and nothing outside it. The
//! image is sparse, so it only takes the space actually written; it survives pause (unmounted) and
//! goes away with the sandbox. The loop device is attached with autoclear, so unmounting releases it.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};
use sandpit_types::ByteSize;

use crate::error::{Result, RuntimeError};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Pre-formatted disk images, so that creating a sandbox does not wait for `mkfs` (5 ms for a
/// 10 GiB image). Images of a size live in `<dir>/<bytes>/`; a new one is written under a
/// temporary name and renamed into place when complete, so a crash never leaves a half-made image
/// to be handed out. Taking one is a rename into the sandbox's directory (same filesystem).
#[derive(Debug)]
pub struct DiskPool {
    dir: PathBuf,
    per_size: usize,
    refilling: std::sync::Mutex<std::collections::HashSet<u64>>,
}

impl DiskPool {
    /// A pool under `dir` keeping `per_size` images of each size asked for; removes leftovers of
    /// an interrupted refill.
    pub fn open(dir: PathBuf, per_size: usize) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(RuntimeError::io("create", &dir))?;
        for size_dir in std::fs::read_dir(&dir).map_err(RuntimeError::io("list", &dir))?.flatten() {
            for f in std::fs::read_dir(size_dir.path()).into_iter().flatten().flatten() {
                if f.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        Ok(Self { dir, per_size, refilling: std::sync::Mutex::new(std::collections::HashSet::new()) })
    }

    fn size_dir(&self, size: ByteSize) -> PathBuf {
        self.dir.join(size.bytes().to_string())
    }

    fn ready(&self, size: ByteSize) -> Vec<PathBuf> {
        std::fs::read_dir(self.size_dir(size))
            .map(|d| {
                d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "img")).collect()
            })
            .unwrap_or_default()
    }

    /// Moves a ready image of `size` to `dest`; `false` if none is ready.
    pub fn take(&self, size: ByteSize, dest: &Path) -> bool {
        self.ready(size).into_iter().any(|img| std::fs::rename(&img, dest).is_ok())
    }

    /// Formats images of `size` until `per_size` are ready (once at a time per size).
    pub async fn refill(&self, size: ByteSize) {
        if self.per_size == 0
            || !self.refilling.lock().unwrap_or_else(|p| p.into_inner()).insert(size.bytes())
        {
            return;
        }
        // Let the create that asked for the refill finish first: on a small host the background
        // mkfs would otherwise compete with it for the CPU.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let dir = self.size_dir(size);
        if std::fs::create_dir_all(&dir).is_ok() {
            while self.ready(size).len() < self.per_size {
                let name = uuid_name();
                let tmp = dir.join(format!("{name}.tmp"));
                if let Err(e) = format(&tmp, size, true).await {
                    tracing::warn!(error = %e, "could not pre-format a sandbox disk");
                    let _ = std::fs::remove_file(&tmp);
                    break;
                }
                if std::fs::rename(&tmp, dir.join(format!("{name}.img"))).is_err() {
                    break;
                }
            }
        }
        self.refilling.lock().unwrap_or_else(|p| p.into_inner()).remove(&size.bytes());
    }
}

fn uuid_name() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{nanos:x}-{:x}", std::process::id())
}

/// Creates the sparse image file and an ext4 filesystem on it.
pub async fn create(image: &Path, size: ByteSize) -> Result<()> {
    format(image, size, false).await
}

/// [`create`], at low CPU priority when `background`.
async fn format(image: &Path, size: ByteSize, background: bool) -> Result<()> {
    let f = File::create(image).map_err(RuntimeError::io("create disk image", image))?;
    f.set_len(size.bytes()).map_err(RuntimeError::io("size disk image", image))?;
    drop(f);
    let mut cmd = if background {
        let mut c = tokio::process::Command::new("nice");
        c.args(["-n", "10", "mkfs.ext4"]);
        c
    } else {
        tokio::process::Command::new("mkfs.ext4")
    };
    let out = cmd
        .args(["-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| RuntimeError::Host { what: "mkfs.ext4 (e2fsprogs)", detail: e.to_string() })?;
    if !out.status.success() {
        return Err(RuntimeError::Command {
            program: "mkfs.ext4",
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Attaches `image` to a free loop device with autoclear and returns the device path and an open
/// handle: autoclear detaches the device at its last close, so the handle must stay open until the
/// filesystem is mounted (the mount then holds the device).
fn attach_loop(image: &Path) -> Result<(PathBuf, File)> {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(RuntimeError::io("open", "/dev/loop-control"))?;
    let backing =
        OpenOptions::new().read(true).write(true).open(image).map_err(RuntimeError::io("open", image))?;
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(RuntimeError::io("find a free loop device via", "/dev/loop-control")(
                std::io::Error::last_os_error(),
            ));
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let loopf = match OpenOptions::new().read(true).write(true).open(&dev) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(RuntimeError::io("open", &dev)(e)),
        };
        let mut cfg = LoopConfig {
            fd: u32::try_from(backing.as_raw_fd()).unwrap_or(u32::MAX),
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        let name = image.as_os_str().as_encoded_bytes();
        let n = name.len().min(63);
        cfg.info.lo_file_name[..n].copy_from_slice(&name[..n]);
        // SAFETY: `cfg` is a valid, fully initialised `struct loop_config` that outlives the call.
        let rc = unsafe { libc::ioctl(loopf.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
        if rc == 0 {
            return Ok((dev, loopf));
        }
        let err = std::io::Error::last_os_error();
        // Another process took the device between GET_FREE and CONFIGURE: try the next one.
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(RuntimeError::io("configure loop device", &dev)(err));
        }
    }
    Err(RuntimeError::Host { what: "loop devices", detail: "no free loop device after 16 tries".into() })
}

/// Mounts the disk image at `target` (a directory).
pub fn mount(image: &Path, target: &Path) -> Result<()> {
    let (dev, handle) = attach_loop(image)?;
    let res = rustix::mount::mount(
        &dev,
        target,
        "ext4",
        MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOATIME,
        None::<&std::ffi::CStr>,
    );
    // On success the mount holds the device; on failure this last close detaches it.
    drop(handle);
    res.map_err(|e| RuntimeError::io("mount disk at", target)(e.into()))
}

/// Unmounts whatever is mounted at `target`; not mounted is fine.
pub fn unmount(target: &Path) -> Result<()> {
    match rustix::mount::unmount(target, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(()),
        Err(rustix::io::Errno::BUSY) => {
            // Something still holds it (a process being reaped): detach lazily, it goes when freed.
            rustix::mount::unmount(target, UnmountFlags::DETACH)
                .map_err(|e| RuntimeError::io("unmount", target)(e.into()))
        }
        Err(e) => Err(RuntimeError::io("unmount", target)(e.into())),
    }
}

/// Detaches loop devices whose backing file is under `dir` (left by a crash between attach and
/// mount). Returns the devices detached.
pub fn detach_stray_loops(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return out };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(e.path().join("loop/backing_file")) else { continue };
        let backing = PathBuf::from(backing.trim().trim_end_matches(" (deleted)"));
        if !backing.starts_with(dir) {
            continue;
        }
        let dev = format!("/dev/{name}");
        if is_mounted_device(&dev) {
            continue;
        }
        if let Ok(f) = File::open(&dev) {
            // SAFETY: LOOP_CLR_FD takes no argument.
            unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD) };
            out.push(dev);
        }
    }
    out
}

fn is_mounted_device(dev: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| m.lines().any(|l| l.split(' ').next() == Some(dev)))
        .unwrap_or(false)
}
