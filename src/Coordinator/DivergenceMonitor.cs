// The divergence rules over a job's logged steps: non-finite loss, loss above the untrained loss, loss spike, max |logit| and ||mu|| limits and rates.
using Job;
using System.Globalization;

namespace Coordinator;

/// <summary>A rule that fired: its name (a divergence.* key), the step (steps done) it fired at, and the values that broke it.</summary>
public sealed record DivergenceEvent(string Rule, long Step, string Values)
{
    public override string ToString() => $"divergence rule {Rule} fired at step {Step}: {Values}";
}

/// <summary>
/// Judges one logged step at a time (the whole StepMetrics record, so that a rule may read any metric), in step order,
/// against the healthy steps before it. A step that breaks no rule joins the history; one that breaks a rule does not
/// (the caller decides: a rollback truncates the history to the checkpoint's step, a warning records the step anyway). Not thread-safe: JobState calls it under its lock.
/// </summary>
/// <param name="untrainedLoss">ln V of the job's padded vocabulary, for divergence.loss_above_untrained; null: that rule is off.</param>
public sealed class DivergenceMonitor(DivergenceOptions options, double? untrainedLoss = null)
{
    const int MaxHistory = 100_000;

    readonly List<StepMetrics> history = [];

    /// <summary>The newest step that passed every rule; 0 before any.</summary>
    public long LastHealthyStep => history.Count > 0 ? history[^1].Step : 0;

    /// <summary>The first rule that step breaks, or null (and the step joins the history). A step not newer than the
    /// newest in the history was judged before and is ignored. NaN logit statistics (not measured) break no rule.</summary>
    public DivergenceEvent? Check(StepMetrics step)
    {
        if (history.Count > 0 && step.Step <= history[^1].Step) return null;
        var fired = Judge(step);
        if (fired is null) Add(step);
        return fired;
    }

    /// <summary>Adds a step to the history whatever the rules said (divergence.action = warn).</summary>
    public void Record(StepMetrics step)
    {
        if (history.Count == 0 || step.Step > history[^1].Step) Add(step);
    }

    /// <summary>Forgets the steps after <paramref name="step"/>: the job goes back to that checkpoint.</summary>
    public void Truncate(long step) => history.RemoveAll(p => p.Step > step);

    void Add(StepMetrics p)
    {
        history.Add(p);
        if (history.Count > MaxHistory) history.RemoveRange(0, history.Count - MaxHistory);
    }

    DivergenceEvent? Judge(StepMetrics p)
    {
        string F(double v) => v.ToString("G6", CultureInfo.InvariantCulture);
        DivergenceEvent Fire(string rule, string values) => new(rule, p.Step, values);

        if (options.NonFinite && !double.IsFinite(p.TrainLoss)) return Fire("non_finite", $"train_loss {F(p.TrainLoss)}");
        if (options.LossSpikeFactor > 0 && history.Count >= options.LossWindow && double.IsFinite(p.TrainLoss))
        {
            var window = history.GetRange(history.Count - options.LossWindow, options.LossWindow);
            double mean = window.Average(w => w.TrainLoss);
            if (p.TrainLoss > options.LossSpikeFactor * mean)
                return Fire("loss_spike_factor", $"train_loss {F(p.TrainLoss)} > {F(options.LossSpikeFactor)} x {F(mean)}, the mean over the {options.LossWindow} " +
                                                 $"logged steps {window[0].Step}..{window[^1].Step} (divergence.loss_spike_factor = {F(options.LossSpikeFactor)})");
        }
        if (options.MaxAbsLogitLimit > 0 && p.MaxAbsLogit > options.MaxAbsLogitLimit)
            return Fire("max_abs_logit_limit", $"max_abs_logit {F(p.MaxAbsLogit)} > {F(options.MaxAbsLogitLimit)}");
        if (options.MuNormLimit > 0 && p.MuNorm > options.MuNormLimit)
            return Fire("mu_norm_limit", $"mu_norm {F(p.MuNorm)} > {F(options.MuNormLimit)}");
        if (Rate("max_abs_logit", options.MaxAbsLogitRate, p, q => q.MaxAbsLogit) is { } logits) return Fire("max_abs_logit_rate", logits);
        if (Rate("mu_norm", options.MuNormRate, p, q => q.MuNorm) is { } mu) return Fire("mu_norm_rate", mu);
        // The backstop, after the rules a user sets: a loss no trained or untrained model has.
        if (options.LossAboveUntrained > 0 && untrainedLoss is double l0 && p.TrainLoss > l0 + options.LossAboveUntrained)
            return Fire("loss_above_untrained", $"train_loss {F(p.TrainLoss)} > {F(l0 + options.LossAboveUntrained)}: the untrained loss ln V = {F(l0)} " +
                                                $"plus divergence.loss_above_untrained = {F(options.LossAboveUntrained)}");
        return null;

        string? Rate(string name, double limit, StepMetrics now, Func<StepMetrics, double> read)
        {
            if (limit <= 0 || !double.IsFinite(read(now))) return null;
            var from = history.FirstOrDefault(q => q.Step >= now.Step - options.RateWindowSteps && double.IsFinite(read(q)));
            if (from is null) return null;
            double rate = (read(now) - read(from)) / (now.Step - from.Step);
            return rate > limit
                ? $"{name} grew from {F(read(from))} at step {from.Step} to {F(read(now))}: {F(rate)} per step > {F(limit)} (divergence.{name}_rate)"
                : null;
        }
    }
}
