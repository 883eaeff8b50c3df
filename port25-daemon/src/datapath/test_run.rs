//! Running the loaded programs on crafted frames (BPF_PROG_TEST_RUN), for the verdict tables, the
//! fuzz test and the bench: never used by the daemon itself.

use std::time::Duration;

use aya::{
    TestRunResult,
    programs::{Program, ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use port25_common::{PROGRAM_NAME, SYNACK_WATCHER_PROGRAM_NAME};

use super::{Datapath, Error};

impl Datapath {
    /// Runs the XDP program on one frame through BPF_PROG_TEST_RUN; returns the XDP action.
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, Error> {
        self.test_run_repeat(frame, 1)
    }

    /// Runs the XDP program `repeat` times on the frame, on the calling thread's CPU; returns the
    /// last XDP action.
    pub fn test_run_repeat(&self, frame: &[u8], repeat: u32) -> Result<u32, Error> {
        self.test_run_timed(frame, repeat).map(|(action, _)| action)
    }

    /// Like [`Datapath::test_run_repeat`], with the kernel's average time per run as well (what
    /// `cargo xtask bench` measures: the kernel divides its own clock over the repeats, so the
    /// syscall's cost is not in it).
    pub fn test_run_timed(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), Error> {
        let program: &Xdp = self.program(PROGRAM_NAME)?;
        run(program, frame, repeat)
    }

    /// The loaded XDP filter, for the bench's program that hands it fresh frames (a tail call).
    pub fn filter_program(&self) -> Result<&Xdp, Error> {
        self.program(PROGRAM_NAME)
    }

    /// Runs the XDP program on one frame; returns the XDP action and the frame as the program left
    /// it (rewritten and resized when it answers with XDP_TX).
    pub fn test_run_output(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), Error> {
        let program: &Xdp = self.program(PROGRAM_NAME)?;
        // A page: the most an XDP test run's linear frame can grow to.
        let mut out = vec![0u8; 4096];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .map_err(Error::program)?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }

    /// Runs the egress (TC) program on one outgoing frame; returns the TC action.
    pub fn test_run_synack_watcher(&self, frame: &[u8]) -> Result<u32, Error> {
        let program: &SchedClassifier = self.program(SYNACK_WATCHER_PROGRAM_NAME)?;
        run(program, frame, 1).map(|(action, _)| action)
    }

    fn program<'a, P>(&'a self, name: &'static str) -> Result<&'a P, Error>
    where
        &'a P: TryFrom<&'a Program, Error = ProgramError>,
    {
        self.ebpf
            .program(name)
            .ok_or(Error::MissingMap(name))?
            .try_into()
            .map_err(Error::program)
    }
}

/// `repeat` runs of `program` on `frame`: the last return value and the kernel's time per run.
fn run<P>(program: &P, frame: &[u8], repeat: u32) -> Result<(u32, Duration), Error>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })
        .map_err(Error::program)?;
    Ok((result.return_value, result.duration))
}
