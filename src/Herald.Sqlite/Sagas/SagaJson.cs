using System.Text.Json.Serialization;

namespace Herald.Sqlite.Sagas;

/// <summary>The source-generated JSON of the saga columns (the completed steps' names).</summary>
[JsonSerializable(typeof(IReadOnlyList<string>))]
internal sealed partial class SagaJson : JsonSerializerContext;
