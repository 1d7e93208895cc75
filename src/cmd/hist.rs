//! `nfpg hist`: the percentiles of a `--hist-log` file, and an SVG plot of them.

use anyhow::Result;

use crate::obs::histreport;

/// Prints the merged percentiles of every stage in `file`; writes the plot to `plot`.
pub fn hist(file: &std::path::Path, plot: Option<&std::path::Path>, title: &str) -> Result<()> {
    let (merged, intervals) = histreport::read_log(file)?;
    print!("{}", histreport::table(&merged, intervals));
    if let Some(out) = plot {
        std::fs::write(out, histreport::svg(&merged, title))?;
        println!("plot written to {}", out.display());
    }
    Ok(())
}
