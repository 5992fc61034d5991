namespace Orders.Domain;

/// <summary>
/// The shop's customers and products. The sample seeds them as events at start (so the projection's lookup tables are
/// filled from the log like any read model) and validates orders against them.
/// </summary>
public static class Catalog
{
    /// <summary>The customer whose card is always declined: the fulfilment saga compensates every order of theirs.</summary>
    public const string BadCardCustomer = "bad-card";

    /// <summary>Orders above this total are declined by the payment service (a deterministic rule for the demo).</summary>
    public const decimal PaymentLimit = 1000m;

    public static IReadOnlyList<Customer> Customers { get; } =
    [
        new("ada", "Ada Lovelace"),
        new("grace", "Grace Hopper"),
        new("linus", "Linus Torvalds"),
        new("alan", "Alan Turing"),
        new(BadCardCustomer, "Mallory (declined card)"),
    ];

    public static IReadOnlyList<Product> Products { get; } =
    [
        new("keyboard", "Mechanical keyboard", 49.90m),
        new("mouse", "Wireless mouse", 19.90m),
        new("monitor", "27-inch monitor", 189.00m),
        new("cable", "USB-C cable", 4.50m),
        new("laptop", "Laptop", 1299.00m),
    ];

    private static readonly Dictionary<string, Customer> CustomersById = Customers.ToDictionary(c => c.Id, StringComparer.Ordinal);
    private static readonly Dictionary<string, Product> ProductsBySku = Products.ToDictionary(p => p.Sku, StringComparer.Ordinal);

    public static Customer? FindCustomer(string id) => CustomersById.GetValueOrDefault(id);

    public static Product? FindProduct(string sku) => ProductsBySku.GetValueOrDefault(sku);
}

/// <summary>A customer of the shop.</summary>
public sealed record Customer(string Id, string Name);

/// <summary>A product of the shop, with its current price.</summary>
public sealed record Product(string Sku, string Name, decimal Price);
