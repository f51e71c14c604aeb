// The learning-rate sensitivity (LRS) of a method over a set of runs (Wortsman et al. 2023).
namespace Oec;

public static class LearningRateSensitivity
{
    /// <summary>
    /// LRS = (1/(N-1)) * sum over the N learning rates of [min(L(eta), L0) - min over eta' of L(eta')], where L0 is
    /// the loss at initialisation (about ln V). A diverged run (non-finite loss) counts as L0: min(NaN, L0) = L0.
    /// The minimum is taken over the capped losses, so a run worse than L0 never lowers it. Lower is more stable.
    /// </summary>
    public static double Compute(IReadOnlyList<double> finalLosses, double initialLoss)
    {
        if (finalLosses.Count < 2)
            throw new ArgumentException($"LRS needs at least 2 learning rates, got {finalLosses.Count}");
        if (!double.IsFinite(initialLoss) || initialLoss <= 0)
            throw new ArgumentException($"LRS initial loss L0 = {initialLoss}: must be finite and positive");
        var capped = finalLosses.Select(l => double.IsFinite(l) ? Math.Min(l, initialLoss) : initialLoss).ToArray();
        double best = capped.Min();
        return capped.Sum(l => l - best) / (capped.Length - 1);
    }
}
