// The live page on the metrics (HTTP/1.1) port: Live/live.html, the vendored uPlot (MIT) and the history as JSON,
// all GET only and all from resources embedded in this assembly.
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Coordinator;

internal static class LivePage
{
    public const string Path = "/live";

    sealed record Asset(byte[] Bytes, string ContentType);

    static readonly Dictionary<string, Asset> Assets = new()
    {
        [Path] = Load("live.html", "text/html; charset=utf-8"),
        [$"{Path}/uPlot.iife.min.js"] = Load("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        [$"{Path}/uPlot.min.css"] = Load("uPlot.min.css", "text/css; charset=utf-8"),
        [$"{Path}/uPlot.LICENSE"] = Load("uPlot.LICENSE", "text/plain; charset=utf-8"),
    };

    /// <summary>Maps "/" (a redirect to /live), the page, its assets and /live/history.json[?since=step]; each answers
    /// 404 on any connection but the metrics port's (<paramref name="onMetricsPort"/>).</summary>
    public static void MapLivePage(this IEndpointRouteBuilder app, MetricsHistory history, Func<HttpContext, bool> onMetricsPort)
    {
        var live = app.MapGroup("").AddEndpointFilter(async (context, next) =>
            onMetricsPort(context.HttpContext) ? await next(context) : Results.NotFound());
        live.MapGet("/", () => Results.Redirect(Path));
        foreach (var (path, asset) in Assets) live.MapGet(path, () => Results.Bytes(asset.Bytes, asset.ContentType));
        live.MapGet($"{Path}/history.json", (HttpContext context) =>
        {
            long since = -1;
            string? raw = context.Request.Query["since"];
            if (raw is not null && !long.TryParse(raw, out since))
                return Results.Text($"since='{raw}' is not a step number", statusCode: StatusCodes.Status400BadRequest);
            var buffer = new MemoryStream();
            using (var writer = new Utf8JsonWriter(buffer)) history.WriteJson(writer, since);
            context.Response.Headers.CacheControl = "no-store";
            return Results.Bytes(buffer.ToArray(), "application/json");
        });
    }

    static Asset Load(string file, string contentType)
    {
        var assembly = typeof(LivePage).Assembly;
        string name = $"Coordinator.Live.{file}";
        using var stream = assembly.GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"resource {name} is not embedded in {assembly.GetName().Name}: see Coordinator.csproj");
        var bytes = new MemoryStream();
        stream.CopyTo(bytes);
        return new Asset(bytes.ToArray(), contentType);
    }
}
