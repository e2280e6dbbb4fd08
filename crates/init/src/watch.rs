//! `watch`: inotify events under a directory, streamed as `fs_event` messages (names relative to
//! the watched directory) until the host closes the connection.

use std::collections::{HashMap, VecDeque};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::event::{PollFd, PollFlags};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::fs::{CWD, Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use sandpit_init::protocol::{FsEvent, FsEventKind, Response};

use crate::conn::Conn;
use crate::error::Failure;
use crate::files::Actor;

/// Events watched on every directory.
const EVENTS: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR)
    .union(WatchFlags::EXCL_UNLINK);
/// Subdirectories are found below the watched one and through no link.
const RESOLVE_BELOW: ResolveFlags =
    ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);

struct Watcher {
    inotify: OwnedFd,
    top_path: String,
    top: OwnedFd,
    /// Watch descriptor → directory relative to the watched one ("" for itself).
    dirs: HashMap<i32, String>,
    recursive: bool,
}

impl Watcher {
    fn join(dir: &str, name: &str) -> String {
        if dir.is_empty() { name.to_owned() } else { format!("{dir}/{name}") }
    }

    /// Watches the directory `rel` (and, when recursive, the directories below it). Returns
    /// the entries found below it, so their creation is not missed when `announce` is set.
    fn add_tree(&mut self, rel: &str, announce: bool) -> Vec<FsEvent> {
        let mut found = Vec::new();
        let mut queue = VecDeque::from([rel.to_owned()]);
        while let Some(dir) = queue.pop_front() {
            // The watched directory itself is watched from the start.
            if !dir.is_empty() {
                let path = format!("{}/{dir}", self.top_path);
                let Ok(wd) =
                    inotify::add_watch(&self.inotify, path.as_str(), EVENTS | WatchFlags::DONT_FOLLOW)
                else {
                    continue;
                };
                self.dirs.insert(wd, dir.clone());
            }
            if !self.recursive {
                continue;
            }
            let at = if dir.is_empty() { ".".to_owned() } else { dir.clone() };
            let Ok(fd) = rustix::fs::openat2(
                &self.top,
                at.as_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE_BELOW,
            ) else {
                continue;
            };
            let Ok(mut entries) = Dir::new(fd) else { continue };
            while let Some(Ok(entry)) = entries.next() {
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let child = Self::join(&dir, &String::from_utf8_lossy(name));
                if announce {
                    found.push(FsEvent { name: child.clone(), kind: FsEventKind::Create });
                }
                if entry.file_type() == FileType::Directory {
                    queue.push_back(child);
                }
            }
        }
        found
    }

    /// Turns pending inotify events into protocol events; `None` when the watched directory
    /// itself went away.
    fn drain(&mut self, buf: &mut [MaybeUninit<u8>]) -> Option<Vec<FsEvent>> {
        let mut raw = Vec::new();
        let mut reader = inotify::Reader::new(&self.inotify, buf);
        loop {
            match reader.next() {
                Ok(event) => {
                    let name = event.file_name().map(|n| String::from_utf8_lossy(n.to_bytes()).into_owned());
                    raw.push((event.wd(), event.events(), name));
                }
                Err(Errno::INTR) => {}
                Err(_) => break,
            }
            if reader.is_buffer_empty() {
                break;
            }
        }
        let mut events = Vec::new();
        for (wd, flags, name) in raw {
            if flags.contains(ReadFlags::IGNORED) {
                self.dirs.remove(&wd);
                continue;
            }
            let Some(dir) = self.dirs.get(&wd).cloned() else { continue };
            let Some(name) = name else {
                if dir.is_empty() && flags.intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF) {
                    return None;
                }
                continue;
            };
            // The temporary files of init's own atomic writes are not news: the rename into
            // place reports the file.
            if crate::files::is_temp_name(&name) {
                continue;
            }
            let rel = Self::join(&dir, &name);
            // As fsnotify (and so E2B's envd) reports them: something moved into place is
            // created there; something moved away is renamed.
            let kind = if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
                FsEventKind::Create
            } else if flags.contains(ReadFlags::MOVED_FROM) {
                FsEventKind::Rename
            } else if flags.contains(ReadFlags::DELETE) {
                FsEventKind::Remove
            } else if flags.contains(ReadFlags::MODIFY) {
                FsEventKind::Write
            } else if flags.contains(ReadFlags::ATTRIB) {
                FsEventKind::Chmod
            } else {
                continue;
            };
            events.push(FsEvent { name: rel.clone(), kind });
            let new_dir =
                flags.contains(ReadFlags::ISDIR) && flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO);
            if self.recursive && new_dir {
                events.extend(self.add_tree(&rel, true));
            }
        }
        Some(events)
    }
}

/// Serves `watch`.
pub fn serve_watch(mut conn: Conn, path: &str, user: Option<&str>, recursive: bool) {
    let started = (|| {
        let actor = Actor::become_user(user)?;
        let abs = actor.path(path)?;
        let top = rustix::fs::openat2(
            CWD,
            abs.as_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| Failure::errno(e, &abs))?;
        let inotify = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
            .map_err(|e| Failure::errno(e, "inotify"))?;
        let wd = inotify::add_watch(&inotify, abs.as_str(), EVENTS).map_err(|e| Failure::errno(e, &abs))?;
        let mut watcher =
            Watcher { inotify, top_path: abs, top, dirs: HashMap::from([(wd, String::new())]), recursive };
        if recursive {
            watcher.add_tree("", false);
        }
        Ok(watcher)
    })();
    let mut watcher = match started {
        Ok(watcher) => watcher,
        Err(f) => return conn.fail(f),
    };
    if conn.send(&Response::Ok).is_err() {
        return;
    }
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 8192];
    loop {
        let (events_ready, host_ready) = {
            let mut fds = [
                PollFd::new(&watcher.inotify, PollFlags::IN),
                PollFd::from_borrowed_fd(conn.stream().as_fd(), PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => (!fds[0].revents().is_empty(), !fds[1].revents().is_empty()),
                Err(Errno::INTR) => continue,
                Err(_) => return,
            }
        };
        if host_ready {
            // The host sends nothing on a watch: readable means it closed (or misbehaves).
            match conn.read_frame() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
        if events_ready {
            let Some(events) = watcher.drain(&mut buf) else { return };
            for event in events {
                if conn.send(&Response::FsEvent { event }).is_err() {
                    return;
                }
            }
        }
    }
}
