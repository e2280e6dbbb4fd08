//! File operations through the real `sandpit-init`: reads and writes (streamed, as a user,
//! atomically), stat, listings, directories, renames, removals, watches, and the refusal of
//! magic links.

// The helpers below fail their test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Client, Sandbox, expect_error};
use sandpit_init::protocol::{
    DATA_CHUNK, ErrorCode, FileEntry, FileKind, Frame, FrameKind, FsEvent, FsEventKind, Request, Response,
};

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

fn write_req(path: &str) -> Request {
    Request::WriteFile { path: path.to_owned(), user: None, mode: None, append: false, create_parents: true }
}

/// Sends `write_file`, the data in chunks and `end`; returns the answer.
fn write_file(sb: &Sandbox, request: Request, data: &[u8]) -> Response {
    let mut c = sb.request(request);
    for chunk in data.chunks(DATA_CHUNK) {
        c.send_frame(Frame::data(FrameKind::Data, chunk.to_vec()));
    }
    c.end();
    c.recv_json()
}

fn entry(response: Response) -> FileEntry {
    match response {
        Response::Entry { entry } => entry,
        other => panic!("expected an entry, got {other:?}"),
    }
}

/// Reads a file: the entry and the content.
fn read_file(
    sb: &Sandbox,
    path: &str,
    offset: u64,
    length: Option<u64>,
) -> Result<(FileEntry, Vec<u8>), (ErrorCode, String)> {
    let mut c = sb.request(Request::ReadFile { path: path.to_owned(), user: None, offset, length });
    let entry = match c.recv_json() {
        Response::File { entry } => entry,
        Response::Error { code, message } => return Err((code, message)),
        other => panic!("{other:?}"),
    };
    let mut data = Vec::new();
    loop {
        let frame = c.recv().unwrap();
        match frame.kind {
            FrameKind::Data => data.extend(frame.payload),
            FrameKind::End => return Ok((entry, data)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn write_then_read_round_trips_with_offsets() {
    let sb = Sandbox::idle();
    let path = p(&sb.dir.path().join("new/sub/file.txt"));
    let e = entry(write_file(&sb, write_req(&path), b"hello world"));
    assert_eq!(
        (e.name.as_str(), e.path.as_str(), e.kind, e.size),
        ("file.txt", path.as_str(), FileKind::File, 11)
    );
    assert_eq!((e.mode, e.uid, e.owner.as_deref()), (0o644, 0, Some("root")));
    let (e2, data) = read_file(&sb, &path, 0, None).unwrap();
    assert_eq!((data.as_slice(), e2.size), (&b"hello world"[..], 11));
    assert_eq!(read_file(&sb, &path, 6, None).unwrap().1, b"world");
    assert_eq!(read_file(&sb, &path, 2, Some(3)).unwrap().1, b"llo");
    assert_eq!(read_file(&sb, &path, 100, None).unwrap().1, b"");
    let leftovers: Vec<_> = std::fs::read_dir(sb.dir.path().join("new/sub")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left");
}

#[test]
fn write_replaces_appends_and_sets_the_mode() {
    let sb = Sandbox::idle();
    let path = p(&sb.dir.path().join("f"));
    entry(write_file(&sb, write_req(&path), b"first version, long"));
    entry(write_file(&sb, write_req(&path), b"second"));
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    let append = Request::WriteFile {
        path: path.clone(),
        user: None,
        mode: None,
        append: true,
        create_parents: false,
    };
    let e = entry(write_file(&sb, append, b" more"));
    assert_eq!((e.size, std::fs::read(&path).unwrap()), (11, b"second more".to_vec()));
    let private = Request::WriteFile {
        path: p(&sb.dir.path().join("secret")),
        user: None,
        mode: Some(0o600),
        append: false,
        create_parents: true,
    };
    assert_eq!(entry(write_file(&sb, private, b"x")).mode, 0o600);
    assert_eq!(std::fs::metadata(sb.dir.path().join("secret")).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn write_errors_have_codes_and_leave_nothing_behind() {
    let sb = Sandbox::idle();
    let no_parents = Request::WriteFile {
        path: p(&sb.dir.path().join("missing/f")),
        user: None,
        mode: None,
        append: false,
        create_parents: false,
    };
    assert_eq!(expect_error(write_file(&sb, no_parents, b"x")).0, ErrorCode::NotFound);
    assert_eq!(expect_error(write_file(&sb, write_req(&p(sb.dir.path())), b"x")).0, ErrorCode::IsADirectory);

    // The host goes away in the middle: the target is untouched and the temporary file removed.
    let target = sb.dir.path().join("kept");
    std::fs::write(&target, "old").unwrap();
    let mut c = sb.request(write_req(&p(&target)));
    c.send_frame(Frame::data(FrameKind::Data, b"partial".to_vec()));
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read(&target).unwrap(), b"old");
    let names: Vec<String> = std::fs::read_dir(sb.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.contains("sandpit-tmp")), "{names:?}");
}

#[test]
fn files_are_written_as_the_user_with_their_permissions() {
    let sb = Sandbox::idle();
    let root_only = sb.dir.path().join("root-only");
    std::fs::create_dir(&root_only).unwrap();
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = sb.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(sb.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |path: &Path| Request::WriteFile {
        path: p(path),
        user: Some("nobody".to_owned()),
        mode: None,
        append: false,
        create_parents: true,
    };
    let (code, message) = expect_error(write_file(&sb, as_nobody(&root_only.join("f")), b"x"));
    assert_eq!(code, ErrorCode::PermissionDenied, "{message}");
    let e = entry(write_file(&sb, as_nobody(&shared.join("dir/f")), b"x"));
    assert_eq!((e.uid, e.owner.as_deref()), (65534, Some("nobody")));
    assert_eq!(std::fs::metadata(shared.join("dir")).unwrap().uid(), 65534, "new parents are theirs too");

    // Reading a root-only file as nobody is refused too.
    let secret = root_only.join("secret");
    std::fs::write(&secret, "s").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut c = sb.request(Request::ReadFile {
        path: p(&secret),
        user: Some("nobody".to_owned()),
        offset: 0,
        length: None,
    });
    assert_eq!(expect_error(c.recv_json()).0, ErrorCode::PermissionDenied);
}

#[test]
fn read_errors_have_codes() {
    let sb = Sandbox::idle();
    assert_eq!(read_file(&sb, &p(sb.dir.path()), 0, None).unwrap_err().0, ErrorCode::IsADirectory);
    let (code, message) = read_file(&sb, &p(&sb.dir.path().join("nope")), 0, None).unwrap_err();
    assert_eq!(code, ErrorCode::NotFound);
    assert!(message.contains("nope"), "the message names the path: {message}");
}

#[test]
fn magic_links_to_init_descriptors_are_refused() {
    let sb = Sandbox::idle();
    assert!(matches!(sb.call(Request::Hello), Response::Hello { .. }), "init is up");
    let fd_dir = format!("/proc/{}/fd", sb.pid());
    let mut tried = Vec::new();
    let paths: Vec<_> = std::fs::read_dir(&fd_dir).unwrap().map(|e| e.unwrap().path()).collect();
    for path in paths {
        // Connection descriptors come and go; the host's files and /dev/null stay.
        let Ok(target) = std::fs::read_link(&path) else { continue };
        if target != sb.log && target != sb.status && target != Path::new("/dev/null") {
            continue;
        }
        let (code, message) = read_file(&sb, &p(&path), 0, None).unwrap_err();
        assert_eq!(code, ErrorCode::InvalidArgument, "{}: {message}", path.display());
        tried.push(target);
    }
    assert!(tried.contains(&sb.log) && tried.contains(&sb.status), "{tried:?}");
    let log_via_self = format!("/proc/self/fd/{}", 101);
    assert!(read_file(&sb, &log_via_self, 0, None).is_err());
    let write = write_req(&format!("/proc/{}/cwd/x", sb.pid()));
    assert_eq!(expect_error(write_file(&sb, write, b"x")).0, ErrorCode::InvalidArgument);
}

#[test]
fn stat_describes_files_directories_and_symlinks() {
    let sb = Sandbox::idle();
    let d = sb.dir.path();
    std::fs::write(d.join("f"), "abc").unwrap();
    symlink("f", d.join("link")).unwrap();
    let stat = |path: &Path| sb.call(Request::Stat { path: p(path), user: None });
    let e = entry(stat(&d.join("f")));
    assert_eq!((e.kind, e.size, e.name.as_str()), (FileKind::File, 3, "f"));
    assert!(e.mtime_ns > 1_600_000_000_000_000_000);
    let e = entry(stat(&d.join("link")));
    assert_eq!((e.kind, e.symlink_target.as_deref()), (FileKind::Symlink, Some("f")));
    assert_eq!(entry(stat(d)).kind, FileKind::Dir);
    assert_eq!(entry(stat(Path::new("/"))).path, "/");
    assert_eq!(expect_error(stat(&d.join("missing"))).0, ErrorCode::NotFound);
    // Relative paths are under the user's home ("/" for an unknown numeric user).
    let e = entry(sb.call(Request::Stat { path: "tmp".to_owned(), user: Some("4321".to_owned()) }));
    assert_eq!(e.path, "/tmp");
}

#[test]
fn list_dir_walks_to_depth_sorted_without_following_links() {
    let sb = Sandbox::idle();
    let d = sb.dir.path().join("tree");
    std::fs::create_dir_all(d.join("b/c/d")).unwrap();
    std::fs::write(d.join("a.txt"), "").unwrap();
    std::fs::write(d.join("b/c/file"), "").unwrap();
    let outside = sb.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("hidden"), "").unwrap();
    symlink(&outside, d.join("link")).unwrap();
    let list = |depth| match sb.call(Request::ListDir { path: p(&d), user: None, depth }) {
        Response::Entries { entries } => {
            entries.into_iter().map(|e| e.path.strip_prefix(&p(&d)).unwrap().to_owned()).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(list(1), ["/a.txt", "/b", "/link"]);
    assert_eq!(list(2), ["/a.txt", "/b", "/b/c", "/link"]);
    assert_eq!(list(10), ["/a.txt", "/b", "/b/c", "/b/c/d", "/b/c/file", "/link"]);
    let (code, _) = expect_error(sb.call(Request::ListDir { path: p(&d), user: None, depth: 0 }));
    assert_eq!(code, ErrorCode::InvalidArgument);
    let (code, _) =
        expect_error(sb.call(Request::ListDir { path: p(&d.join("a.txt")), user: None, depth: 1 }));
    assert_eq!(code, ErrorCode::NotADirectory);
}

#[test]
fn make_dir_rename_and_remove() {
    let sb = Sandbox::idle();
    let d = sb.dir.path();
    let mkdir =
        |path: &Path, parents| sb.call(Request::MakeDir { path: p(path), user: None, parents, mode: None });
    let e = entry(mkdir(&d.join("x/y/z"), true));
    assert_eq!((e.kind, e.mode), (FileKind::Dir, 0o755));
    entry(mkdir(&d.join("x/y/z"), true));
    assert_eq!(expect_error(mkdir(&d.join("x/y/z"), false)).0, ErrorCode::AlreadyExists);
    assert_eq!(expect_error(mkdir(&d.join("q/r"), false)).0, ErrorCode::NotFound);
    let e = entry(sb.call(Request::MakeDir {
        path: p(&d.join("m")),
        user: None,
        parents: false,
        mode: Some(0o700),
    }));
    assert_eq!(e.mode, 0o700);

    std::fs::write(d.join("x/f"), "data").unwrap();
    let e = entry(sb.call(Request::Rename { from: p(&d.join("x/f")), to: p(&d.join("x/y/g")), user: None }));
    assert_eq!((e.path, e.size), (p(&d.join("x/y/g")), 4));
    assert!(!d.join("x/f").exists());
    let (code, _) =
        expect_error(sb.call(Request::Rename { from: p(&d.join("nope")), to: p(&d.join("n2")), user: None }));
    assert_eq!(code, ErrorCode::NotFound);

    let remove = |path: &Path, recursive| sb.call(Request::Remove { path: p(path), user: None, recursive });
    assert_eq!(expect_error(remove(&d.join("x"), false)).0, ErrorCode::DirectoryNotEmpty);
    assert_eq!(remove(&d.join("x/y/g"), false), Response::Ok);
    assert_eq!(remove(&d.join("x/y/z"), false), Response::Ok, "an empty directory needs no recursion");
    assert_eq!(expect_error(remove(&d.join("x/y/z"), false)).0, ErrorCode::NotFound);

    // A deep tree with a symlink out of it: removed entirely, the link's target untouched.
    let mut deep = d.join("deep");
    for i in 0..200 {
        deep = deep.join(format!("level{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("file"), "x").unwrap();
    let keep = d.join("keep");
    std::fs::create_dir(&keep).unwrap();
    std::fs::write(keep.join("precious"), "x").unwrap();
    symlink(&keep, d.join("deep/level0/out")).unwrap();
    assert_eq!(remove(&d.join("deep"), true), Response::Ok);
    assert!(!d.join("deep").exists());
    assert!(keep.join("precious").exists());
}

#[test]
fn watch_reports_changes_including_new_subdirectories() {
    let sb = Sandbox::idle();
    let d = sb.dir.path().join("watched");
    std::fs::create_dir(&d).unwrap();
    let mut c = sb.request(Request::Watch { path: p(&d), user: None, recursive: true });
    assert_eq!(c.recv_json(), Response::Ok);
    std::fs::write(d.join("a.txt"), "1").unwrap();
    std::fs::remove_file(d.join("a.txt")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(d.join("sub/b.txt"), "2").unwrap();
    let want = [
        ("a.txt", FsEventKind::Create),
        ("a.txt", FsEventKind::Write),
        ("a.txt", FsEventKind::Remove),
        ("sub", FsEventKind::Create),
        ("sub/b.txt", FsEventKind::Create),
        ("sub/b.txt", FsEventKind::Write),
    ];
    let mut seen: Vec<FsEvent> = Vec::new();
    while !want.iter().all(|(n, k)| seen.iter().any(|e| e.name == *n && e.kind == *k)) {
        match c.recv_json() {
            Response::FsEvent { event } => seen.push(event),
            other => panic!("{other:?}"),
        }
    }
    let (code, _) =
        expect_error(sb.call(Request::Watch { path: p(&d.join("sub/b.txt")), user: None, recursive: false }));
    assert_eq!(code, ErrorCode::NotADirectory);
}

#[test]
fn one_gibibyte_round_trips_in_small_memory() {
    const SIZE: usize = 1 << 30;
    let sb = Sandbox::idle();
    let path = p(&sb.dir.path().join("big"));
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (Arc::clone(&peak), Arc::clone(&done), sb.pid());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(line) = status.lines().find(|l| l.starts_with("VmRSS:"))
                {
                    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
                    peak.fetch_max(kib, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let chunk = |i: usize| {
        let mut data = vec![u8::try_from(i % 251).unwrap(); DATA_CHUNK];
        data[..8].copy_from_slice(&u64::try_from(i).unwrap().to_le_bytes());
        data
    };
    let mut c: Client = sb.request(write_req(&path));
    for i in 0..SIZE / DATA_CHUNK {
        c.send_frame(Frame::data(FrameKind::Data, chunk(i)));
    }
    c.end();
    assert_eq!(entry(c.recv_json()).size, SIZE as u64);

    let mut c = sb.request(Request::ReadFile { path: path.clone(), user: None, offset: 0, length: None });
    assert!(matches!(c.recv_json(), Response::File { .. }));
    let mut got = 0usize;
    let mut pending: Vec<u8> = Vec::new();
    let mut index = 0;
    loop {
        let frame = c.recv().unwrap();
        if frame.kind == FrameKind::End {
            break;
        }
        got += frame.payload.len();
        pending.extend(frame.payload);
        while pending.len() >= DATA_CHUNK {
            assert!(pending[..DATA_CHUNK] == chunk(index)[..], "chunk {index} differs");
            pending.drain(..DATA_CHUNK);
            index += 1;
        }
    }
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    assert_eq!(got, SIZE);
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak > 0 && peak < 16 * 1024, "init's peak RSS {peak} KiB");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_full_disk_is_no_space_and_leaves_no_temporary_file() {
    // Init runs in a private mount namespace with a 256 KiB tmpfs over its temporary directory.
    let dir = tempfile::tempdir().unwrap();
    let small = p(dir.path());
    let script = "mount -t tmpfs -o size=256k sandpit-test \"$0\" && exec \"$@\"";
    let sb = Sandbox::start_wrapped(
        &["unshare", "-m", "--propagation", "private", "sh", "-c", script, &small],
        &[],
        &[],
    );
    let target = format!("{small}/big");
    let (code, message) = expect_error(write_file(&sb, write_req(&target), &vec![7u8; 1 << 20]));
    assert_eq!(code, ErrorCode::NoSpace, "{message}");
    match sb.call(Request::ListDir { path: small.clone(), user: None, depth: 1 }) {
        Response::Entries { entries } => assert!(entries.is_empty(), "{entries:?}"),
        other => panic!("{other:?}"),
    }
    entry(write_file(&sb, write_req(&format!("{small}/small")), b"fits"));
}
