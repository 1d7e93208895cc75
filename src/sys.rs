//! The libc calls nfpg makes outside the receive backends, each behind a safe function.
//! This and `ingest::recv` are the only modules allowed `unsafe` (see ARCHITECTURE.md).
#![allow(unsafe_code)]

use std::ffi::CString;

/// Whether the process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the system user `name`, if it exists.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    // SAFETY: getpwnam reads a NUL-terminated string and returns null or a pointer to static
    // storage, which is read immediately below, before any other passwd call. nfpg calls it
    // only while starting (from one thread).
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: a non-null result of getpwnam points at a valid passwd record (see above).
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some((uid, gid))
}

/// The effective uid of the process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The name of the system user with this uid, if it has one (thread-safe: `getpwuid_r`).
pub fn user_name(uid: u32) -> Option<String> {
    let mut len = 1024usize;
    loop {
        let mut buf = vec![0 as libc::c_char; len];
        // SAFETY: a zeroed passwd is a valid value for this plain C struct (null pointers,
        // zero ids); getpwuid_r only writes into it.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `pw` and `result` are locals, `buf` is
        // `len` bytes long. On success the strings in `pw` point into `buf`, which outlives
        // their use below.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), len, &mut result) };
        if rc == libc::ERANGE && len < 1 << 20 {
            len *= 4;
            continue;
        }
        if rc != 0 || result.is_null() || pw.pw_name.is_null() {
            return None;
        }
        // SAFETY: getpwuid_r succeeded, so `pw_name` is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        return name.to_str().ok().map(str::to_string);
    }
}

/// Empties the ambient capability set, so programs this process starts from now on (the
/// private PostgreSQL) get none of the capabilities systemd gave nfpg (CAP_NET_ADMIN, ...).
/// nfpg's own capabilities stay. Best effort: kernels before 4.3 have no ambient set.
pub fn clear_ambient_capabilities() {
    // SAFETY: prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL) takes no pointers and only
    // changes this process's ambient set; an error (EINVAL on old kernels) changes nothing.
    let _ = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
}

/// The host name (gethostname(2)), or `None` when it cannot be read.
pub fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call; gethostname
    // writes at most `len` bytes into it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

/// Keeps the kernel from backing this process's memory with transparent huge pages.
///
/// mimalloc asks for huge pages on the arenas it reserves (`madvise(MADV_HUGEPAGE)`), and the
/// kernel then faults in 2 MiB at the first touch of any byte: the batch pool (sized for
/// the whole queue, most of it never used at ordinary rates) made an idle collector 480 MB
/// resident instead of about 60 MB. Measured: no difference in CPU per datagram at 50,000
/// datagrams/s (1.65 against 1.68 µs, three runs each). Inherited by child processes (the
/// private PostgreSQL server: its shared buffers do not use transparent huge pages either
/// way). A kernel without the setting is not an error: the memory is only larger.
pub fn no_transparent_huge_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) takes no pointers and only sets a flag
    // of the calling process; a failure (EINVAL on an old kernel) changes nothing.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_exists_with_id_zero() {
        assert_eq!(super::user_ids("root"), Some((0, 0)));
        assert_eq!(super::user_ids("no such user nfpg"), None);
        assert_eq!(super::user_name(0).as_deref(), Some("root"));
        let me = super::user_name(super::euid()).expect("the current user has a name");
        assert_eq!(
            super::user_ids(&me).map(|(uid, _)| uid),
            Some(super::euid())
        );
    }

    #[test]
    fn the_ambient_set_is_cleared() {
        super::clear_ambient_capabilities();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        if let Some(amb) = status.lines().find_map(|l| l.strip_prefix("CapAmb:")) {
            assert_eq!(u64::from_str_radix(amb.trim(), 16), Ok(0));
        }
    }
}
