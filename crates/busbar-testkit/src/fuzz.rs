//! Bounded mutation fuzzing on the stable toolchain, run as ordinary tests.
//!
//! A target is a function of bytes that must return, without panicking, whatever the bytes
//! are: a decoder of something that comes off the network or from a user. [`Fuzz::run`]
//! feeds it every file of its seed corpus (`fuzz/corpus/<name>/` in the crate), then
//! mutations of them: bit flips, bytes set to values decoders trip on, insertions, deletions,
//! repeated chunks (deep nesting, long names), splices of two seeds and tokens from the
//! target's dictionary. There is no coverage feedback (that needs a nightly toolchain and
//! cargo-fuzz); what this gives is many malformed inputs near valid ones on every test run.
//!
//! * `BUSBAR_FUZZ_RUNS`: mutations per target (default 2,000; `.ci/run` sets more).
//! * `BUSBAR_FUZZ_SEED`: the random seed; by default a new one each run, printed when a
//!   target fails, so a failure can be replayed.
//!
//! An input that makes the target panic is written to `busbar-fuzz-failures/` in the
//! temporary directory, and the test fails naming that file and the seed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Inputs longer than this are cut back: decoders get their size limits tested by their own
/// tests, this looks for malformed structure.
const MAX_INPUT: usize = 64 * 1024;

/// Byte values decoders are likely to treat specially.
const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'{', b'}', b'[', b']', b'"', b'\\', b'/', b'+', b'#', b'.', b'*',
    b'>', b':', b',', b'\n', b'\r', b' ', b'-', b'0', b'9', b'e', b'&', b'$', b'%', b'\t',
];

/// One fuzz target: its name, its seed corpus and dictionary.
pub struct Fuzz {
    name: String,
    corpus: PathBuf,
    dictionary: Vec<Vec<u8>>,
}

impl Fuzz {
    /// The target `name`, seeded from the files in `corpus`.
    pub fn new(name: &str, corpus: impl AsRef<Path>) -> Self {
        Fuzz { name: name.to_owned(), corpus: corpus.as_ref().to_owned(), dictionary: Vec::new() }
    }

    /// Tokens that mean something to the target (keys, keywords, markers), spliced in by
    /// some mutations.
    pub fn dictionary(mut self, words: &[&str]) -> Self {
        self.dictionary.extend(words.iter().map(|w| w.as_bytes().to_vec()));
        self
    }

    /// Runs `target` on the corpus and on mutations of it; panics (failing the test) at the
    /// first input that makes it panic.
    pub fn run(self, target: impl Fn(&[u8])) {
        let seeds = read_corpus(&self.corpus);
        assert!(
            !seeds.is_empty(),
            "fuzz target {}: no seed files in {}",
            self.name,
            self.corpus.display()
        );
        let runs = env_number("BUSBAR_FUZZ_RUNS").unwrap_or(2_000);
        let seed = env_number("BUSBAR_FUZZ_SEED").unwrap_or_else(clock_seed);
        let mut rng = Rng::new(seed);
        // The panic hook is left alone (it is the whole process's, shared with tests running
        // beside this one): the run stops at the first panic, so it prints once.
        let mut failure = None;
        for input in &seeds {
            if let Some(why) = try_one(&target, input) {
                failure = Some((input.clone(), why));
                break;
            }
        }
        if failure.is_none() {
            for _ in 0..runs {
                let input = mutate(&mut rng, &seeds, &self.dictionary);
                if let Some(why) = try_one(&target, &input) {
                    failure = Some((input, why));
                    break;
                }
            }
        }
        if let Some((input, why)) = failure {
            let saved = save_failure(&self.name, &input);
            panic!(
                "fuzz target {} panicked ({why}) on a {}-byte input saved in {}; replay with \
                 BUSBAR_FUZZ_SEED={seed}",
                self.name,
                input.len(),
                saved
            );
        }
    }
}

/// The panic message of `target` on `input`, if it panicked.
fn try_one(target: &impl Fn(&[u8]), input: &[u8]) -> Option<String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| target(input)));
    outcome.err().map(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

fn read_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter(|p| p.is_file()).filter_map(|p| std::fs::read(p).ok()).collect()
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn clock_seed() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map(|d| d.as_nanos() as u64).unwrap_or(0x9e37_79b9_7f4a_7c15) | 1
}

fn save_failure(name: &str, input: &[u8]) -> String {
    let dir = std::env::temp_dir().join("busbar-fuzz-failures");
    let hash = input
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    let path = dir.join(format!("{name}-{hash:016x}"));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input)) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(nowhere: {e})"),
    }
}

/// xorshift64*: fast, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// One mutated input: a seed changed one to eight times.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], dictionary: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(8) {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let byte = if rng.below(2) == 0 {
                    INTERESTING[rng.below(INTERESTING.len())]
                } else {
                    rng.next() as u8
                };
                data.insert(rng.below(len + 1), byte);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16)).min(len);
                data.drain(start..end);
            }
            4 if len > 0 => {
                // A chunk repeated many times: deep nesting, long names, many levels.
                let start = rng.below(len);
                let end = (start + 1 + rng.below(8)).min(len);
                let chunk = data[start..end].to_vec();
                let most = if rng.below(4) == 0 { 2_000 } else { 16 };
                let times = 1 + rng.below(most);
                let at = rng.below(len + 1);
                let repeated: Vec<u8> =
                    chunk.iter().copied().cycle().take(chunk.len() * times).collect();
                data.splice(at..at, repeated);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            6 if !dictionary.is_empty() => {
                let word = &dictionary[rng.below(dictionary.len())];
                let at = rng.below(len + 1);
                let replaced = (at + rng.below(4)).min(len);
                data.splice(at..replaced, word.iter().copied());
            }
            7 if len > 0 => data.truncate(rng.below(len)),
            _ => {
                let byte = rng.next() as u8;
                if len > 0 {
                    let i = rng.below(len);
                    data[i] = byte;
                } else {
                    data.push(byte);
                }
            }
        }
    }
    data.truncate(MAX_INPUT);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_reproducible_and_varied() {
        let seeds = vec![b"{\"a\": [1, 2]}".to_vec(), b"a/b/c".to_vec()];
        let words = vec![b"null".to_vec()];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..200).map(|_| mutate(&mut rng, &seeds, &words)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        let distinct: std::collections::HashSet<_> = run(7).into_iter().collect();
        assert!(distinct.len() > 150, "only {} distinct inputs", distinct.len());
    }

    #[test]
    fn a_panicking_target_is_caught_with_its_input() {
        let dir = std::env::temp_dir().join(format!("busbar-fuzz-self-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join("seed"), b"hello").expect("seed");
        let outcome = catch_unwind(|| {
            Fuzz::new("self_test", &dir).run(|input| {
                assert!(!input.contains(&b'#'), "found a #");
            })
        });
        let _ = std::fs::remove_dir_all(&dir);
        let message = outcome.err().and_then(|p| p.downcast_ref::<String>().cloned());
        let message = message.expect("the fuzzer must find the # (it is one of its bytes)");
        assert!(
            message.contains("found a #") && message.contains("BUSBAR_FUZZ_SEED="),
            "{message}"
        );
    }
}
