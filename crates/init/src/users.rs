//! Users and groups of the sandbox, read from its own `/etc/passwd` and `/etc/group` (init is a
//! static binary: no NSS), and per-thread file-system credentials for acting as a user.

use sandpit_init::protocol::ErrorCode;

use crate::error::Failure;

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The sandbox's user and group database.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    accounts: Vec<Account>,
    groups: Vec<GroupEntry>,
}

/// Who a process or a file operation runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (the primary group included).
    pub groups: Vec<u32>,
    /// User name, when the user database knows it.
    pub name: Option<String>,
    /// Home directory (`/` when unknown).
    pub home: String,
}

impl UserDb {
    /// Reads the sandbox's `/etc/passwd` and `/etc/group`; missing files mean no entries.
    pub fn load() -> Self {
        let read = |path: &str| {
            std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
        };
        Self::parse(&read("/etc/passwd"), &read("/etc/group"))
    }

    /// Parses the content of `/etc/passwd` and `/etc/group`, skipping malformed lines.
    pub fn parse(passwd: &str, group: &str) -> Self {
        let accounts = data_lines(passwd)
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() < 6 || f[0].is_empty() {
                    return None;
                }
                Some(Account {
                    name: f[0].to_owned(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    home: f[5].to_owned(),
                })
            })
            .collect();
        let groups = data_lines(group)
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() < 3 || f[0].is_empty() {
                    return None;
                }
                let members = f
                    .get(3)
                    .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
                    .unwrap_or_default();
                Some(GroupEntry { name: f[0].to_owned(), gid: f[2].parse().ok()?, members })
            })
            .collect();
        Self { accounts, groups }
    }

    /// Resolves `name`, `uid`, `name:group` or `uid:gid` (root when absent).
    ///
    /// Numeric ids need not exist in the database; names must (`not_found` otherwise).
    pub fn resolve(&self, spec: Option<&str>) -> Result<Identity, Failure> {
        let spec = spec.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("0");
        let (user_part, group_part) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let (uid, account) = if is_numeric(user_part) {
            let uid: u32 =
                user_part.parse().map_err(|_| Failure::invalid(format!("bad user id '{user_part}'")))?;
            (uid, self.accounts.iter().find(|a| a.uid == uid))
        } else {
            let account =
                self.accounts.iter().find(|a| a.name == user_part).ok_or_else(|| {
                    Failure::new(ErrorCode::NotFound, format!("user '{user_part}' not found"))
                })?;
            (account.uid, Some(account))
        };
        let gid = match group_part {
            Some(g) if is_numeric(g) => {
                g.parse().map_err(|_| Failure::invalid(format!("bad group id '{g}'")))?
            }
            Some(g) => {
                self.groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("group '{g}' not found")))?
                    .gid
            }
            None => account.map_or(0, |a| a.gid),
        };
        let name = account.map(|a| a.name.clone()).or_else(|| (uid == 0).then(|| "root".to_owned()));
        let home = match account {
            Some(a) if !a.home.is_empty() => a.home.clone(),
            _ if uid == 0 => "/root".to_owned(),
            _ => "/".to_owned(),
        };
        let mut groups = vec![gid];
        if let Some(name) = &name {
            groups.extend(self.groups.iter().filter(|g| g.members.iter().any(|m| m == name)).map(|g| g.gid));
        }
        groups.sort_unstable();
        groups.dedup();
        Ok(Identity { uid, gid, groups, name, home })
    }

    /// The name of user `uid`, when known.
    pub fn user_name(&self, uid: u32) -> Option<&str> {
        self.accounts.iter().find(|a| a.uid == uid).map(|a| a.name.as_str())
    }

    /// The name of group `gid`, when known.
    pub fn group_name(&self, gid: u32) -> Option<&str> {
        self.groups.iter().find(|g| g.gid == gid).map(|g| g.name.as_str())
    }
}

fn data_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim_end).filter(|l| !l.is_empty() && !l.starts_with(['#', '+', '-']))
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl Identity {
    /// Makes the calling thread's file-system permission checks, and the owner of the files it
    /// creates, those of this identity.
    ///
    /// Uses raw `setgroups`/`setfsgid`/`setfsuid` system calls, which change the calling thread
    /// only (glibc's `setgroups` wrapper would change every thread of init). Changing the fsuid
    /// away from 0 also drops the thread's file capabilities (`CAP_DAC_OVERRIDE` and friends).
    pub fn act_as_in_this_thread(&self) -> Result<(), Failure> {
        if self.uid == 0 && self.gid == 0 {
            return Ok(());
        }
        let denied = |what: &str| {
            Failure::new(ErrorCode::PermissionDenied, format!("cannot act as {what} {}", self.uid))
        };
        // SAFETY: setgroups reads `len` gids from a valid, live slice; the raw system call
        // changes only the calling thread's credentials.
        let rc = unsafe { libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr()) };
        if rc != 0 {
            return Err(denied("the groups of user"));
        }
        // SAFETY: setfsgid/setfsuid take one integer and change only the calling thread; an
        // all-ones argument is invalid and only returns the current value, which we compare.
        let (fsgid, fsuid) = unsafe {
            libc::syscall(libc::SYS_setfsgid, libc::c_long::from(self.gid));
            let fsgid = libc::syscall(libc::SYS_setfsgid, libc::c_long::from(u32::MAX));
            libc::syscall(libc::SYS_setfsuid, libc::c_long::from(self.uid));
            let fsuid = libc::syscall(libc::SYS_setfsuid, libc::c_long::from(u32::MAX));
            (fsgid, fsuid)
        };
        if fsgid != libc::c_long::from(self.gid) {
            return Err(denied("group"));
        }
        if fsuid != libc::c_long::from(self.uid) {
            return Err(denied("user"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        user:x:1000:1000::/home/user:/bin/bash\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        broken line\n";
    const GROUP: &str = "root:x:0:\nuser:x:1000:\nwheel:x:10:user,other\ndocker:x:999:user\n";

    fn db() -> UserDb {
        UserDb::parse(PASSWD, GROUP)
    }

    #[test]
    fn default_is_root() {
        let id = db().resolve(None).unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_str()), (0, 0, "/root"));
        assert_eq!(id.name.as_deref(), Some("root"));
    }

    #[test]
    fn names_resolve_with_supplementary_groups() {
        let id = db().resolve(Some("user")).unwrap();
        assert_eq!((id.uid, id.gid), (1000, 1000));
        assert_eq!(id.groups, vec![10, 999, 1000]);
        assert_eq!(id.home, "/home/user");
    }

    #[test]
    fn numeric_ids_need_no_entry() {
        let id = db().resolve(Some("4242")).unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_str()), (4242, 0, "/"));
        assert_eq!(id.name, None);
        let id = db().resolve(Some("4242:77")).unwrap();
        assert_eq!((id.uid, id.gid), (4242, 77));
        let id = db().resolve(Some("1000")).unwrap();
        assert_eq!(id.name.as_deref(), Some("user"));
    }

    #[test]
    fn user_with_group_name() {
        let id = db().resolve(Some("user:wheel")).unwrap();
        assert_eq!((id.uid, id.gid), (1000, 10));
    }

    #[test]
    fn unknown_names_are_not_found() {
        assert_eq!(db().resolve(Some("ghost")).unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(db().resolve(Some("user:ghosts")).unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(db().resolve(Some("99999999999")).unwrap_err().code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn names_of_ids() {
        let db = db();
        assert_eq!(db.user_name(65534), Some("nobody"));
        assert_eq!(db.group_name(999), Some("docker"));
        assert_eq!(db.user_name(5), None);
    }
}
