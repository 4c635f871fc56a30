// Questions scripts/kafka.sh asks a cluster, answered with Kafka's own admin client.
// scripts/kafka.sh compiles it once (javac); it also runs as a single-file source program:
//   java -cp "<kafka libs>/*" Where.java BOOTSTRAP brokers
//        -> the ids of the live brokers, one per line
//   java -cp "<kafka libs>/*" Where.java BOOTSTRAP leader TOPIC PARTITION
//        -> the node id leading that partition
//   java -cp "<kafka libs>/*" Where.java BOOTSTRAP txn-coordinator PREFIX
//        -> "<node id> <transactional id>" for each transactional id starting with PREFIX
//   java -cp "<kafka libs>/*" Where.java BOOTSTRAP group-coordinator GROUP
//        -> the node id coordinating that consumer group
//   java -cp "<kafka libs>/*" Where.java BOOTSTRAP under-replicated
//        -> the number of partitions (internal topics included) whose ISR is short
//   java -cp "<kafka libs>/*" Where.java BOOTSTRAP open-transactions TOPIC
//        -> one line per producer with a transaction open on a partition of TOPIC (what
//           holds read_committed consumers back), then one per ongoing transaction
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.clients.admin.TransactionState;
import org.apache.kafka.common.TopicPartition;

public class Where {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: Where.java BOOTSTRAP brokers|leader|txn-coordinator|group-coordinator|under-replicated ...");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "8000");
        try (Admin admin = Admin.create(props)) {
            switch (args[1]) {
                case "brokers" -> admin.describeCluster().nodes().get(10, TimeUnit.SECONDS)
                        .forEach(n -> System.out.println(n.id()));
                case "leader" -> {
                    var d = admin.describeTopics(List.of(args[2])).allTopicNames()
                            .get(10, TimeUnit.SECONDS).get(args[2]);
                    int p = Integer.parseInt(args[3]);
                    var leader = d.partitions().get(p).leader();
                    if (leader == null) {
                        System.err.println("no leader");
                        System.exit(1);
                    }
                    System.out.println(leader.id());
                }
                case "txn-coordinator" -> {
                    var ids = admin.listTransactions().all().get(10, TimeUnit.SECONDS).stream()
                            .map(TransactionListing::transactionalId)
                            .filter(id -> id.startsWith(args[2]))
                            .toList();
                    if (ids.isEmpty()) {
                        System.err.println("no transactional id starts with " + args[2]);
                        System.exit(1);
                    }
                    var all = admin.describeTransactions(ids).all().get(10, TimeUnit.SECONDS);
                    all.forEach((id, t) -> System.out.println(t.coordinatorId() + " " + id));
                }
                case "group-coordinator" -> {
                    var g = admin.describeConsumerGroups(List.of(args[2])).all()
                            .get(10, TimeUnit.SECONDS).get(args[2]);
                    System.out.println(g.coordinator().id());
                }
                case "under-replicated" -> {
                    var names = admin.listTopics(new ListTopicsOptions().listInternal(true))
                            .names().get(10, TimeUnit.SECONDS);
                    long short_ = admin.describeTopics(names).allTopicNames()
                            .get(10, TimeUnit.SECONDS).values().stream()
                            .flatMap(t -> t.partitions().stream())
                            .filter(p -> p.isr().size() < p.replicas().size())
                            .count();
                    System.out.println(short_);
                }
                case "open-transactions" -> {
                    var d = admin.describeTopics(List.of(args[2])).allTopicNames()
                            .get(10, TimeUnit.SECONDS).get(args[2]);
                    var tps = d.partitions().stream()
                            .map(p -> new TopicPartition(args[2], p.partition())).toList();
                    var producers = admin.describeProducers(tps).all().get(10, TimeUnit.SECONDS);
                    producers.forEach((tp, ps) -> ps.activeProducers().forEach(p ->
                            p.currentTransactionStartOffset().ifPresent(start -> System.out.println(
                                    "partition " + tp.partition() + ": producer " + p.producerId()
                                    + " epoch " + p.producerEpoch() + " has a transaction open from offset "
                                    + start + " (last write " + p.lastTimestamp() + " ms)"))));
                    var ongoing = admin.listTransactions().all().get(10, TimeUnit.SECONDS).stream()
                            .filter(t -> t.state() != TransactionState.COMPLETE_COMMIT
                                    && t.state() != TransactionState.COMPLETE_ABORT
                                    && t.state() != TransactionState.EMPTY)
                            .toList();
                    for (var t : ongoing) {
                        System.out.println("transaction " + t.transactionalId() + " (producer "
                                + t.producerId() + "): " + t.state());
                    }
                }
                default -> {
                    System.err.println("unknown question " + args[1]);
                    System.exit(2);
                }
            }
        } catch (Exception e) {
            System.err.println(e);
            System.exit(1);
        }
    }
}
