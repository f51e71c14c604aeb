// The `divergence` section of the run configuration: which rules watch the training curves, and what happens when one fires.
namespace Job;

public enum DivergenceAction
{
    /// <summary>Roll back to the newest checkpoint before the trouble, skip the data of the steps rolled back,
    /// multiply the learning rate by learning_rate_factor, continue.</summary>
    Rollback,
    /// <summary>End the job as diverged (exit code 3); the checkpoints before the trouble are kept for a resume.</summary>
    Stop,
    /// <summary>Log and count only.</summary>
    Warn,
}

/// <summary>
/// Rules over rank 0's logged steps (its training loss is the global batch's; its logit statistics replica 0's).
/// A threshold or rate of 0 turns that rule off. Rates are per optimizer step, measured between a logged step and the
/// oldest logged step at most rate_window_steps before it.
/// </summary>
public sealed record DivergenceOptions
{
    public DivergenceAction Action { get; init; } = DivergenceAction.Rollback;
    /// <summary>A NaN or infinite training loss.</summary>
    public bool NonFinite { get; init; } = true;
    /// <summary>train_loss above this many times the mean of the loss_window logged steps before it.</summary>
    public double LossSpikeFactor { get; init; } = 2;
    public int LossWindow { get; init; } = 5;
    /// <summary>train_loss above the untrained loss (ln V: a uniform prediction over the padded vocabulary) by more than
    /// this many nats. It catches a run that diverged before the spike rule had a healthy window to compare with, or
    /// whose window diverged with it; an untrained model starts within a fraction of a nat of ln V.</summary>
    public double LossAboveUntrained { get; init; } = 1;
    /// <summary>max |logit| above this value.</summary>
    public double MaxAbsLogitLimit { get; init; }
    /// <summary>||mu|| above this value.</summary>
    public double MuNormLimit { get; init; }
    /// <summary>max |logit| growing faster than this many logits per step.</summary>
    public double MaxAbsLogitRate { get; init; }
    /// <summary>||mu|| growing faster than this much per step.</summary>
    public double MuNormRate { get; init; }
    public int RateWindowSteps { get; init; } = 50;
    /// <summary>Multiplies the learning rate (the whole schedule) at each rollback.</summary>
    public double LearningRateFactor { get; init; } = 0.5;
    /// <summary>Rollbacks before the job is given up as diverged.</summary>
    public int MaxRollbacks { get; init; } = 3;

    public void Validate()
    {
        if (!Enum.IsDefined(Action)) throw new ArgumentException($"divergence.action = {Action}: expected rollback, stop or warn");
        if (!(LossSpikeFactor == 0 || LossSpikeFactor > 1)) throw new ArgumentException($"divergence.loss_spike_factor = {LossSpikeFactor}: must be 0 (off) or above 1");
        if (!(LossAboveUntrained >= 0) || double.IsInfinity(LossAboveUntrained))
            throw new ArgumentException($"divergence.loss_above_untrained = {LossAboveUntrained}: must be 0 (off) or a positive number of nats");
        if (LossWindow < 1) throw new ArgumentException($"divergence.loss_window = {LossWindow}: must be >= 1");
        foreach (var (key, value) in new[] { ("max_abs_logit_limit", MaxAbsLogitLimit), ("mu_norm_limit", MuNormLimit), ("max_abs_logit_rate", MaxAbsLogitRate), ("mu_norm_rate", MuNormRate) })
            if (!(value >= 0) || double.IsInfinity(value)) throw new ArgumentException($"divergence.{key} = {value}: must be 0 (off) or a positive number");
        if (RateWindowSteps < 1) throw new ArgumentException($"divergence.rate_window_steps = {RateWindowSteps}: must be >= 1");
        if (!(LearningRateFactor > 0 && LearningRateFactor <= 1)) throw new ArgumentException($"divergence.learning_rate_factor = {LearningRateFactor}: must be in (0, 1]");
        if (MaxRollbacks < 0) throw new ArgumentException($"divergence.max_rollbacks = {MaxRollbacks}: must be >= 0");
    }
}
