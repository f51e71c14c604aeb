// The Dockerfiles, read as Docker would (no engine on the build machines): what they COPY exists and is sent in the
// context, they pin their base images, and the final image runs /app/oecrun, as a non-root user, from the publish output.
using System.Text.Json;
using System.Text.RegularExpressions;

namespace OecRun.UnitTests;

public partial class DockerfileTests
{
    /// <summary>One instruction: its keyword (upper case), its --flags and the remaining words; continuations joined.</summary>
    sealed record Instruction(string Keyword, Dictionary<string, string> Flags, string[] Words, string Text);

    sealed record Stage(string Image, string? Name, List<Instruction> Instructions);

    static List<Stage> Parse(string path)
    {
        var stages = new List<Stage>();
        string joined = Regex.Replace(File.ReadAllText(path), @"\\\r?\n", " "); // line continuations
        foreach (string raw in joined.Split('\n'))
        {
            string line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            string[] words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var flags = words.Skip(1).TakeWhile(w => w.StartsWith("--", StringComparison.Ordinal))
                .Select(w => w[2..].Split('=', 2)).ToDictionary(kv => kv[0], kv => kv.Length > 1 ? kv[1] : "");
            var instruction = new Instruction(words[0].ToUpperInvariant(), flags, words.Skip(1 + flags.Count).ToArray(), line[words[0].Length..].Trim());
            if (instruction.Keyword == "FROM")
                stages.Add(new Stage(instruction.Words[0], instruction.Words.Length == 3 && instruction.Words[1].Equals("AS", StringComparison.OrdinalIgnoreCase) ? instruction.Words[2] : null, []));
            else
            {
                Assert.True(stages.Count > 0, $"{path}: {instruction.Keyword} before the first FROM");
                stages[^1].Instructions.Add(instruction);
            }
        }
        Assert.True(stages.Count > 0, $"{path}: no FROM");
        return stages;
    }

    /// <summary>.dockerignore's patterns in order (`!` re-includes): `**` any path, `*` and `?` within one name. A pattern
    /// that matches a directory excludes everything under it, as Docker does.</summary>
    static bool Ignored(string relativePath, IEnumerable<string> patterns)
    {
        string[] names = relativePath.Replace('\\', '/').Trim('/').Split('/');
        var prefixes = Enumerable.Range(1, names.Length).Select(n => string.Join('/', names.Take(n))).ToArray();
        bool ignored = false;
        foreach (string pattern in patterns)
        {
            bool include = pattern.StartsWith('!');
            string body = (include ? pattern[1..] : pattern).Trim('/');
            string regex = "^" + Regex.Escape(body).Replace(@"\*\*/", "(.*/)?").Replace(@"\*\*", ".*").Replace(@"\*", "[^/]*").Replace(@"\?", "[^/]") + "$";
            if (prefixes.Any(prefix => Regex.IsMatch(prefix, regex))) ignored = !include;
        }
        return ignored;
    }

    static string Root => TestPrograms.RepositoryRoot;

    static string[] DockerIgnore() =>
        File.ReadAllLines(Path.Combine(Root, ".dockerignore")).Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).ToArray();

    static string DockerfilePath(string file) => Path.Combine(Root, "deploy", "docker", file);

    [Theory]
    [InlineData("Dockerfile.cpu")]
    [InlineData("Dockerfile.gpu")]
    public void Every_COPY_source_exists_in_the_repository_and_is_sent_in_the_context(string file)
    {
        var patterns = DockerIgnore();
        var sources = Parse(DockerfilePath(file)).SelectMany(s => s.Instructions)
            .Where(i => i.Keyword is "COPY" or "ADD" && !i.Flags.ContainsKey("from")).SelectMany(i => i.Words[..^1]).ToArray();

        Assert.NotEmpty(sources);
        foreach (string source in sources)
        {
            string path = Path.Combine(Root, source);
            Assert.True(File.Exists(path) || Directory.Exists(path), $"{file}: COPY source {source} is not in the repository ({path})");
            Assert.False(Ignored(source, patterns), $"{file}: COPY source {source} is excluded by .dockerignore");
            if (!Directory.Exists(path)) continue;
            // a directory's sources (not its build outputs, which the image builds afresh) must all be sent
            foreach (string inner in Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(Root, f)))
                if (!inner.Split('/').Any(name => name is "bin" or "obj"))
                    Assert.False(Ignored(inner, patterns), $"{file}: {inner} (under COPY source {source}) is excluded by .dockerignore");
        }
    }

    /// <summary>A project's inputs outside its own folder (the proto, the Grafana dashboard it embeds) must be copied
    /// into the build stage too, or `dotnet publish` fails there and nowhere else.</summary>
    [Theory]
    [InlineData("Dockerfile.cpu")]
    [InlineData("Dockerfile.gpu")]
    public void The_build_stage_copies_every_file_the_projects_take_from_outside_their_folder(string file)
    {
        var build = Parse(DockerfilePath(file)).Single(s => s.Instructions.Any(i => i.Keyword == "RUN" && i.Text.Contains("dotnet publish")));
        var copied = build.Instructions.Where(i => i.Keyword == "COPY" && !i.Flags.ContainsKey("from")).SelectMany(i => i.Words[..^1])
            .Select(w => w.TrimEnd('/')).ToArray();
        var outside = Directory.EnumerateFiles(Path.Combine(Root, "src"), "*.csproj", SearchOption.AllDirectories)
            .SelectMany(project => ProjectInput().Matches(File.ReadAllText(project)).Select(m => Path.GetFullPath(Path.Combine(Path.GetDirectoryName(project)!, m.Groups[1].Value))))
            .Select(path => Path.GetRelativePath(Root, path).Replace('\\', '/')).Where(path => !path.StartsWith("src/", StringComparison.Ordinal)).ToArray();

        Assert.Contains("deploy/grafana/oec-dashboard.json", outside); // the pattern finds them
        foreach (string input in outside)
            Assert.True(copied.Any(c => input == c || input.StartsWith(c + "/", StringComparison.Ordinal)),
                        $"{file}: a project reads {input}, which no COPY of the build stage ({string.Join(", ", copied)}) brings in");
    }

    [GeneratedRegex(@"Include=""(\.\.[^""*]+)""")]
    private static partial Regex ProjectInput();

    [Fact]
    public void The_dockerignore_keeps_build_outputs_and_runs_out()
    {
        var patterns = DockerIgnore();

        Assert.True(Ignored("src/OecRun/bin/Release/net10.0/oecrun.dll", patterns));
        Assert.True(Ignored("src/Coordinator/obj/project.assets.json", patterns));
        Assert.True(Ignored("runs/2026-01-01/metrics.jsonl", patterns));
        Assert.True(Ignored("dist/oecrun-linux-x64.tar.xz", patterns));
        Assert.False(Ignored("src/OecRun/OecRun.csproj", patterns));
        Assert.False(Ignored("Directory.Packages.props", patterns));
    }

    [Theory]
    [InlineData("Dockerfile.cpu")]
    [InlineData("Dockerfile.gpu")]
    public void Every_FROM_names_an_explicit_tag(string file)
    {
        foreach (var stage in Parse(DockerfilePath(file)))
        {
            string afterRegistry = stage.Image[(stage.Image.LastIndexOf('/') + 1)..];
            Assert.True(afterRegistry.Contains(':') || stage.Image.Contains("@sha256:"), $"{file}: FROM {stage.Image} has no tag");
            Assert.False(afterRegistry.EndsWith(":latest", StringComparison.Ordinal), $"{file}: FROM {stage.Image} uses latest");
        }
    }

    [Theory]
    [InlineData("Dockerfile.cpu", "cpu")]
    [InlineData("Dockerfile.gpu", "none")]
    public void The_final_stage_runs_the_published_oecrun_as_a_non_root_user(string file, string libTorch)
    {
        var stages = Parse(DockerfilePath(file));
        var final = stages[^1];
        var (buildStage, publish) = stages.SelectMany(s => s.Instructions.Where(i => i.Keyword == "RUN" && i.Text.Contains("dotnet publish")).Select(i => (s, i))).Single();
        string[] words = publish.Text[publish.Text.IndexOf("dotnet publish", StringComparison.Ordinal)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        string output = words[Array.FindIndex(words, w => w is "-o" or "--output") + 1];
        string? user = final.Instructions.LastOrDefault(i => i.Keyword == "USER")?.Words[0];
        string[] entrypoint = JsonSerializer.Deserialize<string[]>(final.Instructions.Last(i => i.Keyword == "ENTRYPOINT").Text)!;

        Assert.Equal("src/OecRun", words[2]); // dotnet publish src/OecRun
        Assert.Contains("--self-contained", words);
        Assert.Contains($"-p:LibTorch={libTorch}", words);
        Assert.NotNull(buildStage.Name);
        Assert.Contains(final.Instructions, i => i.Keyword == "COPY" && i.Flags.GetValueOrDefault("from") == buildStage.Name
                                                 && i.Words[0].TrimEnd('/') == output.TrimEnd('/') && i.Words[^1].TrimEnd('/') == "/app");
        Assert.NotNull(user);
        Assert.DoesNotMatch(@"^(root|0)(:|$)", user);
        Assert.Equal("1000", user.Split(':')[0]);
        Assert.Equal(["/app/oecrun"], entrypoint);
    }

    [Fact]
    public void The_gpu_image_takes_libtorch_from_its_PyTorch_and_puts_NCCL_on_the_loader_path()
    {
        var env = Parse(DockerfilePath("Dockerfile.gpu"))[^1].Instructions.Where(i => i.Keyword == "ENV").SelectMany(i => i.Words)
            .Select(w => w.Split('=', 2)).ToDictionary(kv => kv[0], kv => kv[1]);

        Assert.Equal("python", env[Rank.ExternalLibTorch.Variable]);
        Assert.Contains("nccl", env["LD_LIBRARY_PATH"]);
    }
}
