//! Running one future per HAProxy instance at once and collecting their outputs in instance
//! order, so that talking to several instances takes as long as the slowest, not their sum.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A boxed future borrowing from its caller.
type Task<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs every future concurrently on the current task; their outputs, in the same order.
pub(crate) async fn join_all<'a, T: Send + 'a>(futures: impl IntoIterator<Item = Task<'a, T>>) -> Vec<T> {
    JoinAll { tasks: futures.into_iter().map(|f| (Some(f), None)).collect() }.await
}

/// Boxes a future for [`join_all`].
pub(crate) fn task<'a, T>(future: impl Future<Output = T> + Send + 'a) -> Task<'a, T> {
    Box::pin(future)
}

struct JoinAll<'a, T> {
    /// Each future until it finishes, then its output.
    tasks: Vec<(Option<Task<'a, T>>, Option<T>)>,
}

impl<T> Future for JoinAll<'_, T> {
    type Output = Vec<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<T>> {
        let mut pending = false;
        for (future, output) in self.tasks.iter_mut() {
            if let Some(running) = future {
                match running.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *future = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(self.tasks.iter_mut().filter_map(|(_, output)| output.take()).collect())
    }
}

// `JoinAll` holds only boxed (already pinned) futures and plain outputs.
impl<T> Unpin for JoinAll<'_, T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn runs_at_once_and_keeps_the_order() {
        let started = tokio::time::Instant::now();
        let outputs = join_all((0..3u64).map(|i| {
            task(async move {
                tokio::time::sleep(Duration::from_millis(300 - 100 * i)).await;
                i
            })
        }))
        .await;
        assert_eq!(outputs, [0, 1, 2]);
        assert_eq!(started.elapsed(), Duration::from_millis(300), "as long as the slowest");
    }
}
