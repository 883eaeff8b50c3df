//! Users from an `/etc/passwd` text (`name:x:uid:gid:...`): the audit names socket owners, the
//! egress guard turns `allow_users` names into uids and names the users it refused; and whether
//! this process is root.

use std::collections::HashMap;

/// Whether this process runs as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The name of `uid` in /etc/passwd, if it has one.
pub(crate) fn name_of(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    entries(&text).find_map(|(name, entry)| (entry == uid).then(|| name.to_owned()))
}

/// The (name, uid) of each entry, comments and broken lines left out.
fn entries(text: &str) -> impl Iterator<Item = (&str, u32)> {
    text.lines().filter_map(|line| {
        let mut fields = line.split(':');
        let (name, _, uid) = (fields.next()?, fields.next()?, fields.next()?);
        if name.is_empty() || name.starts_with('#') {
            return None;
        }
        Some((name, uid.parse().ok()?))
    })
}

/// User names by uid; the first name of a uid wins.
pub(crate) fn names_by_uid(text: &str) -> HashMap<u32, String> {
    let mut users = HashMap::new();
    for (name, uid) in entries(text) {
        users.entry(uid).or_insert_with(|| name.to_owned());
    }
    users
}

/// The uid of the user `name`.
pub(crate) fn uid_of(text: &str, name: &str) -> Option<u32> {
    entries(text).find_map(|(entry, uid)| (entry == name).then_some(uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n# comment\n\npostfix:x:106:113::/var/spool/postfix:/usr/sbin/nologin\ntoor:x:0:0::/:/bin/sh\nbroken\n";

    #[test]
    fn names_by_uid_keep_the_first_name() {
        let users = names_by_uid(PASSWD);
        assert_eq!(users.get(&0).map(String::as_str), Some("root"));
        assert_eq!(users.get(&106).map(String::as_str), Some("postfix"));
        assert_eq!(users.len(), 2);
    }

    #[test]
    fn uids_by_name() {
        assert_eq!(uid_of(PASSWD, "postfix"), Some(106));
        assert_eq!(uid_of(PASSWD, "root"), Some(0));
        assert_eq!(uid_of(PASSWD, "toor"), Some(0));
        assert_eq!(uid_of(PASSWD, "post"), None);
        assert_eq!(uid_of(PASSWD, "broken"), None);
    }
}
