using System.Text.Json;

namespace Herald.Projections;

/// <summary>
/// A typed handle on a read-model table of <typeparamref name="T"/> documents, stored as JSON with
/// <see cref="JsonOptions"/>. Projections declare their tables with <see cref="Projection.Table{T}(string, JsonSerializerOptions?)"/>
/// and write them through their <see cref="ProjectionContext"/>; queries read them through <see cref="ReadModels"/>.
/// </summary>
/// <typeparam name="T">The document type.</typeparam>
public sealed class ReadModelTable<T>
    where T : class
{
    /// <summary>Creates a handle on <paramref name="name"/>; <paramref name="jsonOptions"/> null means the web defaults (camelCase).</summary>
    /// <exception cref="ArgumentException">The name breaks <see cref="ReadModelNames.IsValid"/>.</exception>
    public ReadModelTable(string name, JsonSerializerOptions? jsonOptions = null)
    {
        ReadModelNames.Validate(name);
        Name = name;
        JsonOptions = jsonOptions ?? JsonSerializerOptions.Web;
    }

    /// <summary>The table's name.</summary>
    public string Name { get; }

    /// <summary>How documents are written and read.</summary>
    public JsonSerializerOptions JsonOptions { get; }

    internal string Serialize(T document) => JsonSerializer.Serialize(document, JsonOptions);

    internal T? Deserialize(string? json) =>
        json is null
            ? null
            : JsonSerializer.Deserialize<T>(json, JsonOptions)
                ?? throw new JsonException($"The read-model document in '{Name}' is JSON null, not a {typeof(T).Name}.");
}
