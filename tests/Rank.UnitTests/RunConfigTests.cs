using Job;
using Coordinator;
using System.Text.Json;
using Oec;
using Rank.Configuration;
using Rank.Model;
using Rank.Training;

namespace Rank.UnitTests;

public class RunConfigTests
{
    static ArgumentException LoadFails(params string[] overrides) =>
        Assert.Throws<ArgumentException>(() => RunConfig.Load(null, overrides));

    static void NamesKeyAndValue(ArgumentException e, string key, string value)
    {
        Assert.Contains(key, e.Message);
        Assert.Contains(value, e.Message);
    }

    [Fact]
    public void The_defaults_are_valid_and_resolve_the_tiny_preset()
    {
        var config = RunConfig.Load(null, []);

        Assert.Equal("tiny", config.Model.Preset);
        Assert.Equal(2, config.Model.NLayer);
        Assert.Equal(64, config.Model.DModel);
        Assert.Equal(4, config.Model.NHead);
        Assert.Equal(OecMethod.MuCentering, config.Oec.Method);
        Assert.Equal("synthetic", config.Data.Source);
        Assert.Equal(512, config.Data.ResolvedVocabSize);
        Assert.Equal(new TrainOptions(), config.Train);
        Assert.Equal(config, config.Validated());
    }

    [Fact]
    public void The_values_of_a_JSON_file_apply_and_overrides_win_over_the_file()
    {
        using var temp = new TempDirectory();
        string file = temp.File("run.json");
        File.WriteAllText(file, """
            {
              "model": { "preset": "small", "weight_tying": true },
              "oec": { "method": "mu_loss", "mu_loss_lambda": 0.01 },
              "data": { "synthetic_tokens": 50000 },
              "train": { "steps": 7, "learning_rate": 0.01, "warmup_steps": 2 }
            }
            """);

        var config = RunConfig.Load(file, ["train.steps=9", "oec.method=z_loss", "model.n_layer=3", "run.out_dir=elsewhere"]);

        Assert.Equal(9, config.Train.Steps);                  // override over file
        Assert.Equal(OecMethod.ZLoss, config.Oec.Method);     // override over file
        Assert.Equal(0.01, config.Train.LearningRate);        // file over default
        Assert.Equal(2, config.Train.WarmupSteps);
        Assert.Equal(0.01, config.Oec.MuLossLambda);
        Assert.Equal(50000, config.Data.SyntheticTokens);
        Assert.True(config.Model.WeightTying);
        Assert.Equal(3, config.Model.NLayer);                 // explicit field over preset
        Assert.Equal(128, config.Model.DModel);               // from preset small
        Assert.Equal("elsewhere", config.Run.OutDir);
        Assert.Equal(new TrainOptions().BatchSize, config.Train.BatchSize); // untouched default
    }

    [Fact]
    public void A_string_override_is_taken_verbatim_with_slashes_and_spaces()
    {
        var config = RunConfig.Load(null, ["run.out_dir=runs/a b"]);

        Assert.Equal("runs/a b", config.Run.OutDir);
    }

    [Fact]
    public void A_number_like_override_of_a_text_setting_is_taken_as_text()
    {
        var config = RunConfig.Load(null, ["run.out_dir=2024", "model.preset=16M"]);

        Assert.Equal("2024", config.Run.OutDir);
        Assert.Equal("16M", config.Model.Preset);
    }

    [Fact]
    public void An_unknown_key_in_a_section_fails_naming_the_key_and_the_value()
    {
        var e = LoadFails("train.bogus=17");

        NamesKeyAndValue(e, "train.bogus", "17");
    }

    [Fact]
    public void An_unknown_top_level_key_fails_naming_the_key_and_the_value()
    {
        var e = LoadFails("optimizer=adam");

        NamesKeyAndValue(e, "optimizer", "adam");
    }

    [Fact]
    public void An_unknown_key_in_a_file_fails_naming_the_key()
    {
        using var temp = new TempDirectory();
        string file = temp.File("run.json");
        File.WriteAllText(file, """{ "train": { "stepz": 5 } }""");

        var e = Assert.Throws<ArgumentException>(() => RunConfig.Load(file, []));

        NamesKeyAndValue(e, "train.stepz", "5");
    }

    [Fact]
    public void An_invalid_method_fails_naming_the_key_the_value_and_the_choices()
    {
        var e = LoadFails("oec.method=mu_centring");

        NamesKeyAndValue(e, "oec.method", "mu_centring");
        Assert.Contains("mu_centering", e.Message);
    }

    [Fact]
    public void An_invalid_divergence_action_fails_naming_the_key_the_value_and_the_choices()
    {
        var e = LoadFails("divergence.action=explode");

        NamesKeyAndValue(e, "divergence.action", "explode");
        Assert.Contains("expected one of rollback, stop, warn", e.Message);
    }

    [Fact]
    public void The_divergence_section_is_read_validated_and_handed_to_the_coordinator_in_the_configuration()
    {
        var config = RunConfig.Load(null, ["divergence.action=stop", "divergence.max_abs_logit_limit=80", "divergence.loss_window=7"]);
        Assert.Equal(new DivergenceOptions { Action = DivergenceAction.Stop, MaxAbsLogitLimit = 80, LossWindow = 7 }, config.Divergence);
        Assert.Equal(config.Divergence, RunConfig.FromJson(config.ToJson()).Divergence);
        Assert.Contains("\"action\": \"stop\"", config.ToJson());

        var e = LoadFails("divergence.learning_rate_factor=2");
        Assert.Contains("divergence.learning_rate_factor = 2: must be in (0, 1]", e.Message);
    }

    [Fact]
    public void Precision_is_fp32_by_default_and_bf16_is_read_and_handed_on_in_the_configuration()
    {
        Assert.Equal(Precision.Fp32, RunConfig.Load(null, []).Train.Precision);
        var config = RunConfig.Load(null, ["train.precision=bf16"]);
        Assert.Equal(Precision.Bf16, config.Train.Precision);
        Assert.Contains("\"precision\": \"bf16\"", config.ToJson());
        Assert.Equal(Precision.Bf16, RunConfig.FromJson(config.ToJson()).Train.Precision);
    }

    [Fact]
    public void An_unknown_precision_fails_naming_the_key_the_value_and_the_choices()
    {
        var e = LoadFails("train.precision=fp16");

        NamesKeyAndValue(e, "train.precision", "fp16");
        Assert.Contains("expected one of fp32, bf16", e.Message);
        var undefined = Assert.Throws<ArgumentException>(() => new TrainOptions { Precision = (Precision)7 }.Validate());
        Assert.Contains("train.precision = 7: expected fp32 or bf16", undefined.Message);
    }

    [Fact]
    public void An_integer_method_is_refused()
    {
        var e = LoadFails("oec.method=1");

        NamesKeyAndValue(e, "oec.method", "1");
    }

    [Theory]
    [InlineData("train.steps=many", "train.steps", "many")]
    [InlineData("train.steps=2.5", "train.steps", "2.5")]
    [InlineData("train.learning_rate=fast", "train.learning_rate", "fast")]
    [InlineData("model.weight_tying=yes", "model.weight_tying", "yes")]
    public void A_value_of_the_wrong_type_fails_naming_the_key_and_the_value(string assignment, string key, string value)
    {
        var e = LoadFails(assignment);

        NamesKeyAndValue(e, key, value);
    }

    [Theory]
    [InlineData(new[] { "train.learning_rate=-1" }, "train.learning_rate", "-1")]
    [InlineData(new[] { "train.steps=10", "train.warmup_steps=20" }, "train.warmup_steps", "20")]
    [InlineData(new[] { "model.d_model=100" }, "model.d_model", "100")]
    [InlineData(new[] { "data.format=bin" }, "data.format", "bin")]
    [InlineData(new[] { "model.preset=huge" }, "model.preset", "huge")]
    [InlineData(new[] { "data.source=shards" }, "data.train_shards", "shards")]
    [InlineData(new[] { "train.batch_size=0" }, "train.batch_size", "0")]
    [InlineData(new[] { "oec.mu_loss_lambda=-0.5" }, "oec.mu_loss_lambda", "-0.5")]
    [InlineData(new[] { "data.vocab_size=70000" }, "data.vocab_size", "70000")]
    [InlineData(new[] { "job.world_size=0" }, "job.world_size", "0")]
    [InlineData(new[] { "job.backend=gloo" }, "job.backend", "gloo")]
    [InlineData(new[] { "job.backend=nccl" }, "job.backend", "nccl")]                                  // NCCL without train.device=cuda
    [InlineData(new[] { "train.device=gpu" }, "train.device", "gpu")]
    [InlineData(new[] { "job.keep_checkpoints=0" }, "job.keep_checkpoints", "0")]
    [InlineData(new[] { "job.heartbeat_timeout_s=1" }, "job.heartbeat_timeout_s", "1")]
    [InlineData(new[] { "job.step_timeout_s=1" }, "job.step_timeout_s", "1")]
    [InlineData(new[] { "job.id=a/b" }, "job.id", "a/b")]
    public void An_impossible_value_fails_naming_the_key_and_the_value(string[] overrides, string key, string value)
    {
        var e = LoadFails(overrides);

        NamesKeyAndValue(e, key, value);
    }

    [Fact]
    public void GPU_ranks_take_nccl_or_the_TCP_ring_through_host_memory_and_a_single_GPU_process_needs_no_backend()
    {
        var gpus = RunConfig.Load(null, ["train.device=cuda", "job.backend=nccl", "job.world_size=8"]);
        var ring = RunConfig.Load(null, ["train.device=cuda", "job.world_size=2"]);
        var one = RunConfig.Load(null, ["train.device=cuda", "job.world_size=1"]);

        Assert.Equal(("cuda", Job.Backend.Nccl), (gpus.Train.Device, gpus.Job.Backend));
        Assert.Equal(("cuda", Job.Backend.Tcp, 2), (ring.Train.Device, ring.Job.Backend, ring.Job.WorldSize));
        Assert.Equal(("cuda", Job.Backend.Tcp), (one.Train.Device, one.Job.Backend));
    }

    [Fact]
    public void An_unset_out_dir_becomes_a_directory_of_its_own_under_runs_and_the_JSON_keeps_it()
    {
        var config = RunConfig.Load(null, []);

        Assert.Matches(@"^runs/\d{8}-\d{6}$", config.Run.OutDir);
        Assert.Equal(config, RunConfig.FromJson(config.ToJson()));
    }

    [Fact]
    public void The_job_section_takes_overrides()
    {
        var config = RunConfig.Load(null, ["job.world_size=4", "job.checkpoint_every=7", "job.resume=true", "job.id=exp-1"]);

        Assert.Equal(4, config.Job.WorldSize);
        Assert.Equal(7, config.Job.CheckpointEvery);
        Assert.Equal(ResumeMode.Yes, config.Job.Resume);
        Assert.Equal("exp-1", config.Job.Id);
    }

    [Fact]
    public void A_malformed_override_fails_naming_it()
    {
        var e = LoadFails("trainsteps");

        Assert.Contains("trainsteps", e.Message);
    }

    [Fact]
    public void A_missing_config_file_fails_naming_the_file()
    {
        using var temp = new TempDirectory();
        string missing = temp.File("absent.json");

        var e = Assert.Throws<ArgumentException>(() => RunConfig.Load(missing, []));

        Assert.Contains(missing, e.Message);
    }

    [Fact]
    public void A_config_file_that_is_not_JSON_fails_naming_the_file()
    {
        using var temp = new TempDirectory();
        string file = temp.File("broken.json");
        File.WriteAllText(file, "{ train: ");

        var e = Assert.Throws<ArgumentException>(() => RunConfig.Load(file, []));

        Assert.Contains(file, e.Message);
    }

    [Fact]
    public void A_config_file_with_a_key_given_twice_fails_naming_the_file_and_the_key()
    {
        using var temp = new TempDirectory();
        string file = temp.File("twice.json");
        File.WriteAllText(file, """{ "train": { "steps": 5, "learning_rate": 0.001, "steps": 50 } }""");

        var e = Assert.Throws<ArgumentException>(() => RunConfig.Load(file, []));

        Assert.Contains(file, e.Message);
        Assert.Contains("'train.steps'", e.Message);
        Assert.Contains("more than once", e.Message);
    }

    [Fact]
    public void ToJson_written_to_a_file_loads_back_to_an_equal_config()
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null,
        [
            "model.preset=16M", "model.weight_tying=true", "oec.method=soft_cap", "oec.soft_cap=15.5",
            "data.vocab_size=1000", "data.synthetic_tokens=12345", "data.val_fraction=0.1",
            "train.steps=77", "train.learning_rate=3e-4", "train.min_learning_rate=1e-6", "train.seed=42",
            "train.grad_clip=0", "run.out_dir=" + temp.File("run"),
        ]);
        string file = temp.File("config.json");
        File.WriteAllText(file, config.ToJson());

        var loaded = RunConfig.Load(file, []);

        Assert.Equal(config, loaded);
        Assert.Equal(config.ToJson(), loaded.ToJson());
    }

    [Fact]
    public void ToJson_writes_snake_case_keys_and_method_names()
    {
        var config = RunConfig.Load(null, ["oec.method=mu_loss"]);

        using var doc = JsonDocument.Parse(config.ToJson());

        Assert.Equal("mu_loss", doc.RootElement.GetProperty("oec").GetProperty("method").GetString());
        Assert.Equal(config.Train.LearningRate, doc.RootElement.GetProperty("train").GetProperty("learning_rate").GetDouble());
        Assert.Equal(64, doc.RootElement.GetProperty("model").GetProperty("d_model").GetInt32());
    }

    [Fact]
    public void A_resume_conflicts_only_with_a_checkpoint_of_another_model_data_section_or_data_order_and_names_both_values()
    {
        var config = RunConfig.Load(null, ["run.out_dir=x"]);

        Assert.Null(config.ResumeConflict(config.ToJson()));
        Assert.Null(config.ResumeConflict((config with { Train = config.Train with { Steps = config.Train.Steps * 2 } }).ToJson()));

        var wider = config with { Model = config.Model with { DModel = 128 } };
        string? model = config.ResumeConflict(wider.ToJson());
        Assert.StartsWith("its model section ", model);
        Assert.Contains("\"d_model\":128", model);
        Assert.Contains("differs from this run's", model);
        Assert.Contains("\"d_model\":64", model);

        var other = config with { Data = config.Data with { SyntheticSeed = config.Data.SyntheticSeed + 1 } };
        Assert.StartsWith("its data section ", config.ResumeConflict(other.ToJson()));
        Assert.StartsWith("its configuration cannot be read", config.ResumeConflict("""{"model":{"no_such_key":1}}"""));

        // What orders the data: the checkpoint's cursor counts sequences read in its order
        Assert.Equal("its global batch, train.batch_size x train.grad_accum = 32 x 1 = 32 sequences, differs from this run's 16 x 1 = 16",
            config.ResumeConflict((config with { Train = config.Train with { BatchSize = 32 } }).ToJson()));
        Assert.Null(config.ResumeConflict((config with { Train = config.Train with { BatchSize = 8, GradAccum = 2 } }).ToJson())); // the same global batch
        Assert.Equal($"its train.seed = 7, which orders the data, differs from this run's {config.Train.Seed}",
            config.ResumeConflict((config with { Train = config.Train with { Seed = 7 } }).ToJson()));
        Assert.StartsWith("its train.sequence_length = 128,", config.ResumeConflict((config with { Train = config.Train with { SequenceLength = 128 } }).ToJson()));
    }

    /// <summary>Computed values are printed and saved beside the settings: a copied config.json holds them and loads;
    /// another value is refused rather than ignored.</summary>
    [Fact]
    public void A_computed_value_given_with_another_value_is_refused_naming_what_it_comes_from()
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, ["run.out_dir=x"]);
        string copied = temp.File("config.json");
        File.WriteAllText(copied, config.ToJson());
        Assert.Equal(config.Train.Overlaps, RunConfig.Load(copied, []).Train.Overlaps); // as saved: loads

        var e = Assert.Throws<ArgumentException>(() => RunConfig.Load(null, ["data.resolved_vocab_size=9999"]));
        Assert.Equal("data.resolved_vocab_size = 9999: computed from data.vocab_size and data.source (512 here), not a setting: remove it (a config.json copied from a run holds it), or set data.vocab_size and data.source", e.Message);
        Assert.StartsWith("train.overlaps = true: computed from train.overlap_grad_reduce and train.device (false here)",
            Assert.Throws<ArgumentException>(() => RunConfig.Load(null, ["train.overlaps=true"])).Message);
        Assert.StartsWith("train.checkpointing = ",
            Assert.Throws<ArgumentException>(() => RunConfig.Load(null, ["train.checkpointing.every=1"])).Message);
    }
}
