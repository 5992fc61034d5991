using System.Security.Cryptography;
using System.Text;
using Herald.Postgres.Schema;

namespace Herald.Postgres.Tests.Schema;

/// <summary>
/// A released migration is never edited: schemas created by an earlier release hold the SQL it ran, and a new schema must get the
/// same. The hashes were taken from the SQL as released; the SQL may be built differently (shared column lists), not changed.
/// </summary>
public sealed class ShippedMigrationTests
{
    private static readonly Dictionary<int, string> Released = new()
    {
        [1] = "CC97BF34705F1F4C0F5837FA55E8524615F6E23BD1DE7B5F31EBDDF388EABD38",
        [2] = "8D2D17DB35C5646F84103245AB7AAF1791F6346602CCFF49F2C7B34D42D6F83D",
        [3] = "427D3CCEF125CDF31318EDA762F8BC4F2C5967FD7A7B47D84E371AEBAD15BF23",
        [4] = "85D32836B94DC3957763232EF1449A0EDECC1285EE0BCB1155408EDA2CDA0EA3",
        [5] = "69FFDE54F1016879E10B292D8BF74D041F7448E9139DEDF360C5F231AD84028B",
        [6] = "9E11F548A4C98BB3C268E234E46E2FAC4B450B7B5E530CA380F963F4FAB5A0F0",
        [7] = "8CC951B01F9E8DBF1B307EE357AD4D9AE0894F8EEB5B3EBEA6B6B23440B804EE",
        [8] = "28133D98EE50FDB366EC382173423CAC0731F71610471C77C3E233F3000CAFD3",
        [9] = "35BB99B67DEC8B795E78D025F41B6AEA17A638F0FB21140FB3A7F47D9BBC8A1A",
        [10] = "1C571F3E4EDBB78452FB7B4C834A30A27BAEFE8DC1B4EE79218BB46A5ED73EA1",
        [11] = "DC52EB7B15262D98C7079680EC465499C647F824232C70AC84925D0C5E1CF239",
    };

    [Fact]
    public void ReleasedMigrations_RunTheSqlTheyRanWhenReleased()
    {
        var actual = Migrations.All.ToDictionary(m => m.Version, m => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(m.Sql))));
        Assert.True(
            Released.Count > 0 && Released.All(r => actual.GetValueOrDefault(r.Key) == r.Value),
            "Released migrations changed: " + string.Join(", ", actual.Select(a => $"[{a.Key}] = \"{a.Value}\"")));
    }
}
