//! The ask/tell bookkeeping every strategy shares: the pending population, the
//! "finished" and "tell without ask" checks, the generation counter, the best member
//! seen and the count of non-finite fitness values.

use crate::error::{EvolveError, Result};
use crate::{check_len, Best, Population};

/// Where a strategy stands: generations completed, the budget, the best member seen
/// and how many non-finite fitness values were told. [`crate::Strategy`]'s getters
/// ([`crate::Strategy::generation`], [`crate::Strategy::best`], ...) read it through
/// [`crate::Strategy::progress`].
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    generation: usize,
    max_generations: Option<usize>,
    best: Option<Best>,
    non_finite: usize,
}

impl Progress {
    /// Number of completed generations (`tell` calls that succeeded).
    pub fn generation(&self) -> usize {
        self.generation
    }

    /// Generation budget, if any.
    pub fn max_generations(&self) -> Option<usize> {
        self.max_generations
    }

    /// True once the generation budget is used up.
    pub fn is_done(&self) -> bool {
        self.max_generations.is_some_and(|m| self.generation >= m)
    }

    /// Best member seen so far (by raw fitness), if any finite fitness was told.
    pub fn best(&self) -> Option<&Best> {
        self.best.as_ref()
    }

    /// How many NaN/infinite fitness values have been told so far.
    pub fn non_finite_count(&self) -> usize {
        self.non_finite
    }

    /// Count the non-finite values and keep the best finite member (the first of equals).
    fn observe(&mut self, pop: &[Vec<f64>], fitness: &[f64]) {
        for (x, &f) in pop.iter().zip(fitness) {
            if !f.is_finite() {
                self.non_finite += 1;
                continue;
            }
            if self.best.as_ref().is_none_or(|b| f > b.fitness) {
                self.best = Some(Best {
                    x: x.clone(),
                    fitness: f,
                });
            }
        }
    }
}

/// The ask/tell protocol of a [`crate::Strategy`], shared by all of them, so that a
/// strategy only holds its algorithm.
///
/// `P` is what a strategy remembers about the pending population besides the members
/// themselves (e.g. the CMA-ES steps `y_k`, the OpenES noise `eps_k`; `()` if nothing).
///
/// - [`Bookkeeping::begin_ask`]: [`EvolveError::Finished`] once the budget is used up;
///   otherwise the pending population, sampled by the strategy only if none is pending
///   (asking twice returns the same population).
/// - [`Bookkeeping::check_tell`]: [`EvolveError::TellWithoutAsk`] or
///   [`EvolveError::FitnessLength`], without changing anything.
/// - [`Bookkeeping::finish_tell`]: the same checks, then it counts the generation,
///   records the best member and the non-finite values and hands back the pending
///   population and `P` for the strategy's update.
///
/// ```
/// use latentevo_evolve::{Bookkeeping, EvolveError};
/// let mut book: Bookkeeping<()> = Bookkeeping::new(Some(1));
/// assert_eq!(book.check_tell(&[1.0]), Err(EvolveError::TellWithoutAsk));
/// let pop = book.begin_ask(|| (vec![vec![0.0], vec![1.0]], ())).unwrap();
/// assert_eq!(book.begin_ask(|| unreachable!()).unwrap(), pop);
/// let (told, ()) = book.finish_tell(&[0.5, f64::NAN]).unwrap();
/// assert_eq!(told, pop);
/// let p = book.progress();
/// assert_eq!((p.generation(), p.non_finite_count(), p.best().unwrap().fitness), (1, 1, 0.5));
/// assert_eq!(book.begin_ask(|| unreachable!()), Err(EvolveError::Finished { generations: 1 }));
/// ```
#[derive(Debug, Clone)]
pub struct Bookkeeping<P> {
    pending: Option<(Population, P)>,
    progress: Progress,
}

impl<P> Bookkeeping<P> {
    /// Nothing pending, generation 0, with the given budget.
    pub fn new(max_generations: Option<usize>) -> Self {
        Bookkeeping {
            pending: None,
            progress: Progress {
                generation: 0,
                max_generations,
                best: None,
                non_finite: 0,
            },
        }
    }

    /// The progress (generation, budget, best member, non-finite count).
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The pending population, if `ask` was called since the last `tell`.
    pub fn pending(&self) -> Option<&Population> {
        self.pending.as_ref().map(|(pop, _)| pop)
    }

    /// Forget the pending population (a following `tell` is then an error), e.g.
    /// after the strategy's state was replaced from outside.
    pub fn clear_pending(&mut self) {
        self.pending = None;
    }

    /// The population to evaluate next: the pending one, or a new one from `sample`
    /// (called only when nothing is pending).
    ///
    /// # Errors
    /// [`EvolveError::Finished`] once the generation budget is used up.
    pub fn begin_ask(&mut self, sample: impl FnOnce() -> (Population, P)) -> Result<Population> {
        if self.progress.is_done() {
            return Err(EvolveError::Finished {
                generations: self.progress.generation,
            });
        }
        let (pop, _) = self.pending.get_or_insert_with(sample);
        Ok(pop.clone())
    }

    /// Check a `tell` without changing anything.
    ///
    /// # Errors
    /// [`EvolveError::TellWithoutAsk`] if nothing is pending,
    /// [`EvolveError::FitnessLength`] if `fitness` does not have one value per member.
    pub fn check_tell(&self, fitness: &[f64]) -> Result<()> {
        let (pop, _) = self.pending.as_ref().ok_or(EvolveError::TellWithoutAsk)?;
        check_len(pop.len(), fitness)
    }

    /// Complete a generation: after the checks of [`Bookkeeping::check_tell`], record
    /// the best member and the non-finite values, count the generation and return the
    /// pending population with its `P`.
    ///
    /// # Errors
    /// Those of [`Bookkeeping::check_tell`]; then nothing has changed.
    pub fn finish_tell(&mut self, fitness: &[f64]) -> Result<(Population, P)> {
        self.check_tell(fitness)?;
        let (pop, state) = self.pending.take().ok_or(EvolveError::TellWithoutAsk)?;
        self.progress.observe(&pop, fitness);
        self.progress.generation += 1;
        Ok((pop, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed tell changes nothing; ask after tell samples anew; no budget never ends.
    #[test]
    fn failed_tell_changes_nothing_and_ask_resamples() {
        let mut book: Bookkeeping<u32> = Bookkeeping::new(None);
        let mut draws = 0;
        let mut sample = |k: f64| {
            draws += 1;
            (vec![vec![k], vec![-k]], draws)
        };
        let first = book.begin_ask(|| sample(1.0)).unwrap();
        let before = book.progress().clone();
        assert_eq!(
            book.finish_tell(&[1.0]),
            Err(EvolveError::FitnessLength { expected: 2, got: 1 })
        );
        assert_eq!(book.progress(), &before);
        assert_eq!(book.pending(), Some(&first));
        let (pop, draw) = book.finish_tell(&[f64::INFINITY, -3.0]).unwrap();
        assert_eq!((pop, draw), (first, 1));
        let p = book.progress();
        assert_eq!((p.generation(), p.non_finite_count(), p.is_done()), (1, 1, false));
        assert_eq!(
            p.best(),
            Some(&Best {
                x: vec![-1.0],
                fitness: -3.0
            })
        );
        assert_eq!(
            book.begin_ask(|| sample(2.0)).unwrap(),
            vec![vec![2.0], vec![-2.0]]
        );
        book.clear_pending();
        assert_eq!(book.finish_tell(&[0.0, 0.0]), Err(EvolveError::TellWithoutAsk));
        assert_eq!(book.progress().generation(), 1);
    }
}
