//! `analytics-bind-port ADDRESS PORT`: the port helper. Run with
//! `cap_net_bind_service` (set by the package), it binds a port below 1024 on
//! loopback (or an address listed in `/etc/analytics-desk/bind-addresses`),
//! hands the listening socket back over the Unix socket on its standard input,
//! and exits. Every input is treated as hostile; the checks live in
//! `analytics_desk::http::port_helper`. It reads no environment variable.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

use analytics_desk::http::port_helper::{self, BIND_ADDRESSES_FILE, HELPER_NAME};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // Its own path, from the kernel (/proc/self/exe), for the setcap hint.
    let helper = std::env::current_exe().map_or_else(|_| HELPER_NAME.to_string(), |p| p.display().to_string());
    let stdin = std::io::stdin();
    match port_helper::serve_request(&args, Path::new(BIND_ADDRESSES_FILE), stdin.as_fd(), &helper) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{HELPER_NAME}: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
