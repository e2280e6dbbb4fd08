//! Hostile and tricky layer tars against the unpacker: every one is refused or defused, and
//! nothing is ever created outside the destination.
// A test crate: helpers outside #[test] functions report failures by panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::{Arena, is_whiteout, meta, nlink, shift, unique, xattr};
use sandpit_image::testkit::craft::{RawEntry, layer_tar};
use sandpit_image::unpack::{SkipReason, UnpackOptions, UnpackReport, XattrDropReason, unpack_tar};
use sandpit_image::{ImageError, UnsafePathReason};
use sandpit_types::ByteSize;

fn options() -> UnpackOptions {
    UnpackOptions { shift: shift(), max_bytes: ByteSize::gib(1) }
}

fn unpack(arena: &Arena, entries: &[RawEntry]) -> Result<UnpackReport, ImageError> {
    unpack_tar(&layer_tar(entries)[..], &arena.dest, &options())
}

fn assert_unsafe(result: Result<UnpackReport, ImageError>, expected_entry: &str, expected: UnsafePathReason) {
    match result {
        Err(ImageError::UnsafePath { entry, reason }) => {
            assert_eq!(entry, expected_entry);
            assert_eq!(reason, expected);
        }
        other => panic!("expected UnsafePath for {expected_entry:?}, got {other:?}"),
    }
}

#[test]
fn dot_dot_entry_is_refused_and_nothing_escapes() {
    let arena = Arena::new();
    let result = unpack(&arena, &[RawEntry::file(b"../escape", b"x")]);
    assert_unsafe(result, "../escape", UnsafePathReason::ParentComponent);
    arena.assert_nothing_escaped(&[&arena.base.path().join("escape")]);
}

#[test]
fn absolute_name_climbing_out_is_refused() {
    let arena = Arena::new();
    let name = format!("/abs/../../{}", unique("sandpit-escape"));
    let result = unpack(&arena, &[RawEntry::file(name.as_bytes(), b"x")]);
    assert_unsafe(result, &name, UnsafePathReason::ParentComponent);
    arena.assert_nothing_escaped(&[&Path::new("/").join(name.rsplit('/').next().unwrap())]);
}

#[test]
fn inner_dot_dot_is_refused_even_in_a_gnu_long_name() {
    let arena = Arena::new();
    let result = unpack(&arena, &[RawEntry::dir(b"a/"), RawEntry::file(b"a/../../x", b"x")]);
    assert_unsafe(result, "a/../../x", UnsafePathReason::ParentComponent);
    let long = format!("{}/../../../y", "d".repeat(120));
    let result = unpack(&Arena::new(), &[RawEntry::file(long.as_bytes(), b"x").gnu_long_name()]);
    assert_unsafe(result, &long, UnsafePathReason::ParentComponent);
    arena.assert_nothing_escaped(&[&arena.base.path().join("x")]);
}

#[test]
fn pax_path_with_dot_dot_is_refused() {
    let arena = Arena::new();
    let result = unpack(&arena, &[RawEntry::file(b"harmless", b"x").pax("path", b"../pax-escape")]);
    assert_unsafe(result, "../pax-escape", UnsafePathReason::ParentComponent);
    arena.assert_nothing_escaped(&[&arena.base.path().join("pax-escape")]);
}

#[test]
fn symlink_to_root_cannot_redirect_a_later_entry_outside() {
    let arena = Arena::new();
    let host_tmp_name = unique("sandpit-escape");
    let into_tmp = format!("t/{host_tmp_name}");
    let report = unpack(
        &arena,
        &[
            RawEntry::symlink(b"a", b"/"),
            RawEntry::file(b"a/pwned", b"stays inside"),
            RawEntry::symlink(b"t", b"/tmp"),
        ],
    )
    .unwrap();
    assert_eq!(report.symlinks, 2);
    // `a/pwned` resolved with the layer root as `/`: it is the layer's own /pwned.
    assert_eq!(std::fs::read(arena.dest.join("pwned")).unwrap(), b"stays inside");
    assert_eq!(std::fs::read_link(arena.dest.join("a")).unwrap(), Path::new("/"));
    assert!(Path::new("/pwned").symlink_metadata().is_err());
    // `t -> /tmp` with no tmp/ in the layer: the entry has no directory to go to.
    let again = Arena::new();
    let result =
        unpack(&again, &[RawEntry::symlink(b"t", b"/tmp"), RawEntry::file(into_tmp.as_bytes(), b"x")]);
    assert!(matches!(result, Err(ImageError::ParentNotDirectory { .. })), "{result:?}");
    let host_path = Path::new("/tmp").join(&host_tmp_name);
    arena.assert_nothing_escaped(&[&host_path]);
    again.assert_nothing_escaped(&[&host_path]);
}

#[test]
fn symlink_up_the_tree_cannot_redirect_a_later_entry_outside() {
    let arena = Arena::new();
    unpack(&arena, &[RawEntry::symlink(b"a", b"../../.."), RawEntry::file(b"a/pwned", b"inside")]).unwrap();
    assert_eq!(std::fs::read(arena.dest.join("pwned")).unwrap(), b"inside");
    arena.assert_nothing_escaped(&[&arena.base.path().join("pwned"), Path::new("/pwned")]);
}

#[test]
fn symlink_chain_into_the_sentinel_cannot_be_written_through() {
    let arena = Arena::new();
    let target = arena.sentinel.display().to_string();
    unpack(
        &arena,
        &[
            RawEntry::symlink(b"s", target.as_bytes()),
            RawEntry::symlink(b"up", b"../sentinel"),
            RawEntry::dir(b"up/"),
            RawEntry::file(b"up/keep", b"overwritten?"),
        ],
    )
    .unwrap();
    // The directory entry replaced the symlink `up` instead of following it.
    assert!(meta(&arena.dest.join("up")).is_dir());
    assert_eq!(std::fs::read(arena.dest.join("up/keep")).unwrap(), b"overwritten?");
    arena.assert_nothing_escaped(&[]);
}

#[test]
fn hard_link_with_dot_dot_target_is_refused() {
    let arena = Arena::new();
    let before = nlink(Path::new("/etc/passwd"));
    let result = unpack(&arena, &[RawEntry::hard_link(b"h", b"../../etc/passwd")]);
    assert_unsafe(result, "h", UnsafePathReason::HardLinkOutside);
    assert_eq!(nlink(Path::new("/etc/passwd")), before);
    arena.assert_nothing_escaped(&[]);
}

#[test]
fn hard_link_to_an_absolute_host_path_is_refused() {
    let arena = Arena::new();
    let before = nlink(Path::new("/etc/shadow"));
    let result = unpack(&arena, &[RawEntry::hard_link(b"h", b"/etc/shadow")]);
    assert!(
        matches!(&result, Err(ImageError::HardLinkTargetMissing { entry, target }) if entry == "h" && target == "/etc/shadow"),
        "{result:?}"
    );
    assert_eq!(nlink(Path::new("/etc/shadow")), before);
    assert!(arena.dest.join("h").symlink_metadata().is_err());
    arena.assert_nothing_escaped(&[]);
}

#[test]
fn hard_link_through_a_symlinked_directory_is_refused() {
    let arena = Arena::new();
    let before = nlink(Path::new("/etc/passwd"));
    for dir_target in [&b"/etc"[..], b"../../../../etc"] {
        let fresh = Arena::new();
        let result =
            unpack(&fresh, &[RawEntry::symlink(b"d", dir_target), RawEntry::hard_link(b"h", b"d/passwd")]);
        assert!(matches!(result, Err(ImageError::HardLinkTargetMissing { .. })), "{result:?}");
        fresh.assert_nothing_escaped(&[]);
    }
    // With the layer's own etc/passwd, the same link resolves to that file, inside the layer.
    unpack(
        &arena,
        &[
            RawEntry::dir(b"etc/"),
            RawEntry::file(b"etc/passwd", b"layer passwd"),
            RawEntry::symlink(b"d", b"/etc"),
            RawEntry::hard_link(b"h", b"d/passwd"),
        ],
    )
    .unwrap();
    assert_eq!(meta(&arena.dest.join("h")).ino(), meta(&arena.dest.join("etc/passwd")).ino());
    assert_eq!(nlink(Path::new("/etc/passwd")), before);
    arena.assert_nothing_escaped(&[]);
}

#[test]
fn whiteout_tricks_are_refused_or_ignored() {
    for name in [&b".wh."[..], b"a/.wh..", b".wh..."] {
        let arena = Arena::new();
        let result = unpack(&arena, &[RawEntry::file(name, b"")]);
        assert_unsafe(result, &String::from_utf8_lossy(name), UnsafePathReason::BadWhiteout);
        arena.assert_nothing_escaped(&[]);
    }
    let arena = Arena::new();
    assert_unsafe(
        unpack(&arena, &[RawEntry::file(b"../.wh.x", b"")]),
        "../.wh.x",
        UnsafePathReason::ParentComponent,
    );
    let result = unpack(&arena, &[RawEntry::file(b"f", b"file"), RawEntry::file(b"f/.wh..wh..opq", b"")]);
    assert!(matches!(result, Err(ImageError::ParentNotDirectory { .. })), "{result:?}");
    arena.assert_nothing_escaped(&[]);

    let arena = Arena::new();
    let report =
        unpack(&arena, &[RawEntry::file(b".wh..wh.plnk", b""), RawEntry::file(b"d/.wh..wh.aufs", b"")])
            .unwrap();
    assert_eq!(report.skipped_count, 2);
    assert!(report.skipped.iter().all(|s| s.reason == SkipReason::AufsMetadata));
    assert!(arena.dest.join(".wh..wh.plnk").symlink_metadata().is_err());
}

#[test]
fn whiteouts_become_overlay_devices_and_opaque_markers() {
    let arena = Arena::new();
    let report = unpack(
        &arena,
        &[
            RawEntry::dir(b"a/"),
            RawEntry::file(b"a/.wh.gone", b""),
            RawEntry::file(b".wh.top", b""),
            RawEntry::dir(b"c/"),
            RawEntry::file(b"c/.wh..wh..opq", b""),
            RawEntry::file(b"c/kept", b"k"),
        ],
    )
    .unwrap();
    assert_eq!((report.whiteouts, report.opaque_directories), (2, 1));
    assert!(is_whiteout(&arena.dest.join("a/gone")));
    assert!(is_whiteout(&arena.dest.join("top")));
    assert_eq!(meta(&arena.dest.join("top")).uid(), shift().host_base());
    assert_eq!(xattr(&arena.dest.join("c"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(xattr(&arena.dest.join("a"), "trusted.overlay.opaque"), None);
    assert!(arena.dest.join("a/.wh.gone").symlink_metadata().is_err());
}

#[test]
fn directory_recreated_over_its_whiteout_is_opaque() {
    let arena = Arena::new();
    unpack(&arena, &[RawEntry::file(b".wh.d", b""), RawEntry::dir(b"d/"), RawEntry::file(b"d/new", b"n")])
        .unwrap();
    assert!(meta(&arena.dest.join("d")).is_dir());
    assert_eq!(xattr(&arena.dest.join("d"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
}

#[test]
fn devices_are_skipped_and_reported_and_links_to_them_too() {
    let arena = Arena::new();
    let report = unpack(
        &arena,
        &[
            RawEntry::dir(b"dev/"),
            RawEntry::char_device(b"dev/null", 1, 3),
            RawEntry::block_device(b"dev/sda", 8, 0),
            RawEntry::hard_link(b"dev/null2", b"dev/null"),
        ],
    )
    .unwrap();
    assert_eq!(report.skipped_count, 3);
    assert_eq!(report.skipped[0].reason, SkipReason::CharDevice { major: 1, minor: 3 });
    assert_eq!(report.skipped[1].reason, SkipReason::BlockDevice { major: 8, minor: 0 });
    assert_eq!(report.skipped[2].reason, SkipReason::HardLinkToSkipped { target: "dev/null".to_owned() });
    assert!(common::names(&arena.dest.join("dev")).is_empty());
    arena.assert_nothing_escaped(&[]);
}

#[test]
fn huge_declared_size_is_refused_before_anything_is_written() {
    let arena = Arena::new();
    let result = unpack(&arena, &[RawEntry::file(b"big", b"short data").declared_size(1 << 40)]);
    assert!(matches!(result, Err(ImageError::TooLarge { .. })), "{result:?}");
    assert!(arena.dest.join("big").symlink_metadata().is_err());
    arena.assert_nothing_escaped(&[]);
}

#[test]
fn declared_size_longer_than_the_stream_is_a_truncated_entry() {
    let arena = Arena::new();
    let result = unpack(&arena, &[RawEntry::file(b"short", b"ten bytes!").declared_size(64 * 1024)]);
    assert!(
        matches!(&result, Err(ImageError::TruncatedEntry { entry, declared: 65536, .. }) if entry == "short"),
        "{result:?}"
    );
    arena.assert_nothing_escaped(&[]);
}

#[test]
fn oversized_pax_header_is_refused_without_reading_it_into_memory() {
    let arena = Arena::new();
    let huge = vec![b'v'; 2 << 20];
    let result = unpack(&arena, &[RawEntry::file(b"f", b"x").pax("SCHILY.xattr.user.big", &huge)]);
    assert!(matches!(result, Err(ImageError::ExtensionHeadersTooLarge { .. })), "{result:?}");
}

#[test]
fn nul_in_a_pax_name_or_symlink_target_is_refused() {
    let arena = Arena::new();
    assert_unsafe(
        unpack(&arena, &[RawEntry::file(b"x", b"").pax("path", b"a\0b")]),
        "a\0b",
        UnsafePathReason::Nul,
    );
    let result = unpack(&arena, &[RawEntry::symlink(b"l", b"ok").pax("linkpath", b"/etc\0/passwd")]);
    assert_unsafe(result, "l", UnsafePathReason::SymlinkTargetNul);
}

#[test]
fn root_entry_must_be_a_directory() {
    let arena = Arena::new();
    assert_unsafe(unpack(&arena, &[RawEntry::file(b".", b"x")]), ".", UnsafePathReason::RootNotDirectory);
    assert_unsafe(
        unpack(&arena, &[RawEntry::symlink(b"/", b"/etc")]),
        "/",
        UnsafePathReason::RootNotDirectory,
    );
    let arena = Arena::new();
    unpack(&arena, &[RawEntry::dir(b"./").mode(0o750).owner(5, 6)]).unwrap();
    let m = meta(&arena.dest);
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o750, 100_005, 100_006));
}

#[test]
fn owners_modes_times_and_xattrs_are_applied_with_the_shift() {
    let arena = Arena::new();
    let long_name = format!("deep/{}", "n".repeat(150));
    let report = unpack(
        &arena,
        &[
            RawEntry::dir(b"bin/").owner(0, 0),
            RawEntry::file(b"bin/tool", b"#!/bin/sh\n").mode(0o4755).owner(0, 0).mtime(1_234_567_890),
            RawEntry::file(b"bin/group-tool", b"x").mode(0o2711).owner(0, 42),
            RawEntry::dir(b"tmp/").mode(0o1777),
            RawEntry::file(b"home/u/file", b"u").owner(1000, 1000).pax("mtime", b"1700000000.25"),
            RawEntry::file(b"far", b"f").owner(70_000, 3_000_000_000),
            RawEntry::file(b"attrs", b"a")
                .pax("SCHILY.xattr.user.note", b"kept")
                .pax("SCHILY.xattr.trusted.overlay.opaque", b"y")
                .pax("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02")
                .pax("SCHILY.xattr.user.overlay.redirect", b"/x"),
            RawEntry::symlink(b"abs-link", b"/bin/tool"),
            RawEntry::symlink(b"rel-link", b"../does/not/exist"),
            RawEntry::hard_link(b"bin/tool-link", b"bin/tool"),
            RawEntry::fifo(b"pipe").mode(0o620).owner(3, 4),
            RawEntry::file(long_name.as_bytes(), b"long"),
        ],
    )
    .unwrap();
    let d = &arena.dest;
    let tool = meta(&d.join("bin/tool"));
    assert_eq!((tool.uid(), tool.gid(), tool.mode() & 0o7777), (100_000, 100_000, 0o4755));
    assert_eq!(tool.mtime(), 1_234_567_890);
    let group_tool = meta(&d.join("bin/group-tool"));
    assert_eq!((group_tool.gid(), group_tool.mode() & 0o7777), (100_042, 0o2711));
    assert_eq!(meta(&d.join("tmp")).mode() & 0o7777, 0o1777);
    let user_file = meta(&d.join("home/u/file"));
    assert_eq!((user_file.uid(), user_file.gid()), (101_000, 101_000));
    assert_eq!((user_file.mtime(), user_file.mtime_nsec()), (1_700_000_000, 250_000_000));
    // home/ and home/u/ were not listed: created as sandbox-root 0755 directories.
    assert_eq!(report.implicit_directories, 3);
    assert_eq!(meta(&d.join("home")).uid(), 100_000);
    let far = meta(&d.join("far"));
    assert_eq!((far.uid(), far.gid()), (100_000 + 65_534, 100_000 + 65_534));
    assert_eq!(report.overflow_ids, 1);
    assert_eq!(xattr(&d.join("attrs"), "user.note").as_deref(), Some(&b"kept"[..]));
    assert_eq!(xattr(&d.join("attrs"), "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&d.join("attrs"), "security.capability"), None);
    let dropped: Vec<_> = report.dropped_xattrs.iter().map(|x| (x.name.as_str(), x.reason)).collect();
    assert_eq!(
        dropped,
        [
            ("trusted.overlay.opaque", XattrDropReason::Trusted),
            ("security.capability", XattrDropReason::Security),
            ("user.overlay.redirect", XattrDropReason::UserOverlay),
        ]
    );
    assert_eq!(std::fs::read_link(d.join("abs-link")).unwrap(), Path::new("/bin/tool"));
    assert_eq!(std::fs::read_link(d.join("rel-link")).unwrap(), Path::new("../does/not/exist"));
    assert_eq!(meta(&d.join("abs-link")).uid(), 100_000);
    assert_eq!(meta(&d.join("bin/tool-link")).ino(), tool.ino());
    let pipe = meta(&d.join("pipe"));
    assert!(pipe.file_type().is_fifo());
    assert_eq!((pipe.uid(), pipe.gid(), pipe.mode() & 0o7777), (100_003, 100_004, 0o620));
    assert_eq!(std::fs::read(d.join(&long_name)).unwrap(), b"long");
    assert_eq!((report.files, report.symlinks, report.hard_links, report.fifos), (6, 2, 1, 1));
    arena.assert_nothing_escaped(&[]);
}

#[test]
fn later_entries_replace_earlier_ones_without_following_symlinks() {
    let arena = Arena::new();
    let passwd_before = std::fs::read(Path::new("/etc/passwd")).unwrap();
    let tmp_mode_before = meta(Path::new("/tmp")).permissions().mode();
    unpack(
        &arena,
        &[
            RawEntry::symlink(b"f", b"/etc/passwd"),
            RawEntry::file(b"f", b"replaces the symlink"),
            RawEntry::symlink(b"d", b"/tmp"),
            RawEntry::dir(b"d/").mode(0o700),
            RawEntry::dir(b"x/"),
            RawEntry::file(b"x/inner", b"i"),
            RawEntry::file(b"x", b"a file replaces the directory"),
            RawEntry::file(b"y", b"a directory replaces the file"),
            RawEntry::dir(b"y/"),
        ],
    )
    .unwrap();
    let d = &arena.dest;
    assert!(meta(&d.join("f")).is_file());
    assert_eq!(std::fs::read(d.join("f")).unwrap(), b"replaces the symlink");
    assert!(meta(&d.join("d")).is_dir());
    assert!(meta(&d.join("x")).is_file());
    assert!(meta(&d.join("y")).is_dir());
    assert_eq!(std::fs::read(Path::new("/etc/passwd")).unwrap(), passwd_before);
    assert_eq!(meta(Path::new("/tmp")).permissions().mode(), tmp_mode_before);
    arena.assert_nothing_escaped(&[]);
}

#[test]
fn garbage_is_an_invalid_tar_error() {
    let arena = Arena::new();
    let result = unpack_tar(&[0x55u8; 2048][..], &arena.dest, &options());
    assert!(matches!(result, Err(ImageError::InvalidTar { .. })), "{result:?}");
}
