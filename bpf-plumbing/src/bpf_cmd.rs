//! The `bpf(2)` commands aya 0.14 does not wrap for us: pin and open a pin as a raw fd, read what a
//! link is attached to, detach a link at once, swap the program of a link, attach a program that
//! is not aya's own as an extension, and read a program's BTF (numbers from the kernel's
//! `enum bpf_cmd`; each attr struct mirrors the leading part of `union bpf_attr` that command reads).

use std::{
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
};

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_BTF_GET_FD_BY_ID: libc::c_long = 19;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_DETACH: libc::c_long = 34;

/// The attr of BPF_OBJ_PIN and BPF_OBJ_GET: a path, and the fd of what to pin.
#[repr(C)]
struct PathAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

fn c_path(path: &Path) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// Opens the object pinned at `path` (a link, here).
pub fn obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    let c_path = c_path(path)?;
    let get = PathAttr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: the path `get` points to outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &get) }?;
    owned(fd)
}

/// The fd a command just returned, owned.
fn owned(fd: libc::c_long) -> std::io::Result<OwnedFd> {
    let fd =
        i32::try_from(fd).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Pins `object` (a program or a link) at `path`.
pub fn obj_pin(object: BorrowedFd<'_>, path: &Path) -> std::io::Result<()> {
    let c_path = c_path(path)?;
    let pin = PathAttr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: raw(object),
        file_flags: 0,
    };
    // SAFETY: the path `pin` points to outlives the call; the fd is open for it.
    unsafe { bpf(BPF_OBJ_PIN, &pin) }?;
    Ok(())
}

/// Attaches the extension (freplace) program `program` in place of the function `btf_id` of
/// `target` (BPF_LINK_CREATE, Linux 5.10 for a target other than the load-time one): how a
/// component goes into a libxdp dispatcher's slot.
pub fn link_create_freplace(
    program: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    btf_id: u32,
) -> std::io::Result<OwnedFd> {
    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_fd: u32,
        attach_type: u32,
        flags: u32,
        target_btf_id: u32,
        _pad: u32,
    }
    let create = LinkCreate {
        prog_fd: raw(program),
        target_fd: raw(target),
        attach_type: 0,
        flags: 0,
        target_btf_id: btf_id,
        _pad: 0,
    };
    // SAFETY: `create` holds no pointer; both fds are open for the call.
    let fd = unsafe { bpf(BPF_LINK_CREATE, &create) }?;
    owned(fd)
}

/// The raw BTF (as `bpf(BPF_BTF_LOAD)` took it) of BTF object `id`: a loaded program's types.
pub fn btf_data(id: u32) -> std::io::Result<Vec<u8>> {
    #[repr(C)]
    struct ById {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }
    #[repr(C)]
    #[derive(Default)]
    struct BtfInfo {
        btf: u64,
        btf_size: u32,
        id: u32,
        name: u64,
        name_len: u32,
        kernel_btf: u32,
    }
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let by_id = ById {
        id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: `by_id` holds no pointer.
    let btf = owned(unsafe { bpf(BPF_BTF_GET_FD_BY_ID, &by_id) }?)?;
    let mut data = vec![0u8; 4096];
    loop {
        let mut info = BtfInfo {
            btf: data.as_mut_ptr() as u64,
            btf_size: u32::try_from(data.len()).unwrap_or(u32::MAX),
            ..BtfInfo::default()
        };
        let get = GetInfo {
            bpf_fd: raw(btf.as_fd()),
            info_len: size_of::<BtfInfo>() as u32,
            info: std::ptr::from_mut(&mut info) as u64,
        };
        // SAFETY: `info` and the buffer it points to are writable for their sizes and outlive
        // the call.
        unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &get) }?;
        let size = info.btf_size as usize;
        if size <= data.len() {
            data.truncate(size);
            return Ok(data);
        }
        data.resize(size, 0);
    }
}

/// Detaches the program of a link at once (BPF_LINK_DETACH, Linux 5.9), rather than when the
/// kernel releases the link after its last fd and pin go.
pub fn link_detach(link: BorrowedFd<'_>) -> std::io::Result<()> {
    #[repr(C)]
    struct LinkDetach {
        link_fd: u32,
    }
    let detach = LinkDetach { link_fd: raw(link) };
    // SAFETY: `detach` holds no pointer; the fd is open for the call.
    unsafe { bpf(BPF_LINK_DETACH, &detach) }?;
    Ok(())
}

/// Puts `program` in place of the link's program, atomically (BPF_LINK_UPDATE, Linux 5.7): the
/// hook is never without one.
pub fn link_update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> std::io::Result<()> {
    #[repr(C)]
    struct LinkUpdate {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    let update = LinkUpdate {
        link_fd: raw(link),
        new_prog_fd: raw(program),
        flags: 0,
        old_prog_fd: 0,
    };
    // SAFETY: `update` holds no pointer; both fds are open for the call.
    unsafe { bpf(BPF_LINK_UPDATE, &update) }?;
    Ok(())
}

const BPF_LINK_TYPE_CGROUP: u32 = 3;
const BPF_LINK_TYPE_XDP: u32 = 6;

/// The cgroup a cgroup link is attached to (its id: the inode of the directory); 0 once the link
/// was detached or the cgroup is gone, or for another kind of link.
pub fn link_cgroup_id(link: BorrowedFd<'_>) -> std::io::Result<u64> {
    let (kind, target) = link_target(link)?;
    Ok(if kind == BPF_LINK_TYPE_CGROUP {
        target
    } else {
        0
    })
}

/// The interface an XDP link is attached to; 0 once the link was detached (`bpftool link
/// detach`) or the interface is gone, or for another kind of link.
pub fn link_xdp_ifindex(link: BorrowedFd<'_>) -> std::io::Result<u32> {
    let (kind, target) = link_target(link)?;
    Ok(if kind == BPF_LINK_TYPE_XDP {
        u32::try_from(target).unwrap_or(0)
    } else {
        0
    })
}

/// A link's type and the first member of its `struct bpf_link_info` union: a cgroup link's
/// `cgroup_id` (u64), an XDP link's `ifindex` (u32, the rest zeroed by the kernel).
fn link_target(link: BorrowedFd<'_>) -> std::io::Result<(u32, u64)> {
    /// The head of `struct bpf_link_info`: type, id, prog_id, then the union, 8-aligned.
    #[repr(C)]
    #[derive(Default)]
    struct LinkInfo {
        kind: u32,
        id: u32,
        prog_id: u32,
        _pad: u32,
        target: u64,
        attach_type: u32,
        _tail: [u32; 9],
    }
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = LinkInfo::default();
    let get = GetInfo {
        bpf_fd: raw(link),
        info_len: size_of::<LinkInfo>() as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    // SAFETY: `info` is writable for `info_len` bytes and outlives the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &get) }?;
    Ok((info.kind, info.target))
}

fn raw(fd: BorrowedFd<'_>) -> u32 {
    u32::try_from(fd.as_fd().as_raw_fd()).unwrap_or(u32::MAX)
}

/// `bpf(cmd, attr, size_of(attr))`: the kernel takes the rest of `union bpf_attr` as zero.
///
/// # Safety
/// Every pointer inside `attr` must be valid for what `cmd` does with it.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live value of the size passed; the caller vouches for its pointers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ret)
}
