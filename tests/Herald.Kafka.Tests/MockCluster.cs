using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using Confluent.Kafka;

namespace Herald.Kafka.Tests;

/// <summary>
/// The Kafka the tests run against: <c>HERALD_KAFKA_BOOTSTRAP</c> when set (a real cluster), else librdkafka's own mock
/// cluster (three brokers inside this process), started once per test run through the C API of the librdkafka that
/// Confluent.Kafka ships. The mock speaks the Kafka protocol on loopback ports, so every client (kafkajs too) can reach it.
/// What it cannot do (and so these tests cannot check here): transactions and transactional offsets, fencing, most admin
/// calls (CreateTopics times out; topics are auto-created with 4 partitions on first metadata request instead).
/// </summary>
internal static class MockCluster
{
    private const string Library = "librdkafka";
    private static readonly Lazy<string> Bootstrap = new(Start);
    private static IntPtr _cluster;

    /// <summary>How long the mock keeps a KIP-848 group member that stopped heartbeating before it hands its partitions to the others.</summary>
    public static readonly TimeSpan ConsumerSessionTimeout = TimeSpan.FromSeconds(10);

    /// <summary>True when the tests run against librdkafka's mock cluster rather than a real one.</summary>
    public static bool IsMock => string.IsNullOrEmpty(Environment.GetEnvironmentVariable("HERALD_KAFKA_BOOTSTRAP"));

    /// <summary>The bootstrap servers of the cluster under test.</summary>
    public static string BootstrapServers => Bootstrap.Value;

    /// <summary>Creates a topic with <paramref name="partitions"/> partitions on the mock (where the admin API cannot).</summary>
    public static void CreateTopic(string topic, int partitions)
    {
        _ = Bootstrap.Value;
        var error = rd_kafka_mock_topic_create(_cluster, topic, partitions, 1);
        if (error != 0)
        {
            throw new InvalidOperationException($"rd_kafka_mock_topic_create({topic}) failed with error {error}.");
        }
    }

    private static string Start()
    {
        if (!IsMock)
        {
            return Environment.GetEnvironmentVariable("HERALD_KAFKA_BOOTSTRAP")!;
        }

        // The P/Invokes below must bind to the very library Confluent.Kafka loads (one process-wide copy).
        NativeLibrary.SetDllImportResolver(typeof(MockCluster).Assembly, static (name, _, _) =>
            name == Library ? NativeLibrary.Load(LibraryPath()) : IntPtr.Zero);
        Confluent.Kafka.Library.Load();
        var error = new StringBuilder(512);
        var handle = rd_kafka_new(1, rd_kafka_conf_new(), error, (UIntPtr)error.Capacity);
        if (handle == IntPtr.Zero)
        {
            throw new InvalidOperationException("rd_kafka_new failed: " + error);
        }

        _cluster = rd_kafka_mock_cluster_new(handle, 3);
        if (_cluster == IntPtr.Zero)
        {
            throw new InvalidOperationException("rd_kafka_mock_cluster_new failed.");
        }

        // KIP-848 groups rebalance on the heartbeat: a short one makes a rebalance take moments instead of seconds.
        rd_kafka_mock_set_group_consumer_heartbeat_interval_ms(_cluster, 100);
        rd_kafka_mock_group_initial_rebalance_delay_ms(_cluster, 0);

        // A member that stops heartbeating (a killed process in CompetingProcessesTests) loses its partitions after this,
        // instead of the mock's default 30 s: long enough for a loaded machine's heartbeats, short enough for a test.
        rd_kafka_mock_set_group_consumer_session_timeout_ms(_cluster, (int)ConsumerSessionTimeout.TotalMilliseconds);
        return Marshal.PtrToStringAnsi(rd_kafka_mock_cluster_bootstraps(_cluster))!;
    }

    private static string LibraryPath()
    {
        var native = Path.Combine(AppContext.BaseDirectory, "runtimes", RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? "linux-arm64" : "linux-x64", "native");
        var centos = Path.Combine(native, "centos8-librdkafka.so");
        return File.Exists(centos) ? centos : Path.Combine(native, "librdkafka.so");
    }

    /// <summary>
    /// The next Produce requests (of any client, on any broker) fail with these Kafka error codes, in order: tests that
    /// use it run alone (<see cref="ProduceErrorsCollection"/>).
    /// </summary>
    public static void PushProduceErrors(params int[] errors) => PushRequestErrors(0, errors);

    /// <summary>As <see cref="PushProduceErrors"/>, for the requests of Kafka API <paramref name="apiKey"/> (2: ListOffsets).</summary>
    public static void PushRequestErrors(short apiKey, params int[] errors)
    {
        _ = Bootstrap.Value;
        rd_kafka_mock_push_request_errors_array(_cluster, apiKey, (UIntPtr)errors.Length, errors);
    }

    /// <summary>
    /// Makes the mock answer metadata requests for <paramref name="topic"/> with Kafka error <paramref name="error"/> (3:
    /// unknown topic, as a topic that does not exist on a cluster without auto-creation; 0 to undo it).
    /// </summary>
    public static void SetTopicError(string topic, int error)
    {
        _ = Bootstrap.Value;
        rd_kafka_mock_topic_set_error(_cluster, topic, error);
    }

    [DllImport(Library, CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern void rd_kafka_mock_topic_set_error(IntPtr cluster, string topic, int error);

    [DllImport(Library)]
    private static extern void rd_kafka_mock_push_request_errors_array(IntPtr cluster, short apiKey, UIntPtr count, int[] errors);

    [DllImport(Library)]
    private static extern IntPtr rd_kafka_conf_new();

    [DllImport(Library)]
    private static extern IntPtr rd_kafka_new(int type, IntPtr conf, StringBuilder errstr, UIntPtr errstrSize);

    [DllImport(Library)]
    private static extern IntPtr rd_kafka_mock_cluster_new(IntPtr rk, int brokerCount);

    [DllImport(Library)]
    private static extern IntPtr rd_kafka_mock_cluster_bootstraps(IntPtr cluster);

    [DllImport(Library)]
    private static extern void rd_kafka_mock_set_group_consumer_session_timeout_ms(IntPtr cluster, int ms);

    [DllImport(Library)]
    private static extern void rd_kafka_mock_set_group_consumer_heartbeat_interval_ms(IntPtr cluster, int ms);

    [DllImport(Library)]
    private static extern void rd_kafka_mock_group_initial_rebalance_delay_ms(IntPtr cluster, int ms);

    [DllImport(Library, CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern int rd_kafka_mock_topic_create(IntPtr cluster, string topic, int partitionCount, int replicationFactor);
}
