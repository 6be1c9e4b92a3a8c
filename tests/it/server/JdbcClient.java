// The PostgreSQL JDBC driver (pgjdbc, Debian's libpostgresql-jdbc-java) as
// DBeaver and other JDBC tools use it: connect, read the catalog through
// DatabaseMetaData, run a statement and a prepared statement with a bound
// parameter. Run as a single source file:
//
//   java -cp /usr/share/java/postgresql.jar JdbcClient.java URL USER PASSWORD SQL PREPARED PARAM
//
// Prints one line per step, "key<TAB>value", values joined by ",".
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public class JdbcClient {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        Connection conn;
        try {
            conn = DriverManager.getConnection(args[0], props);
        } catch (SQLException e) {
            System.out.println("login\t" + e.getSQLState() + " " + e.getMessage());
            return;
        }
        DatabaseMetaData meta = conn.getMetaData();
        System.out.println("product\t" + meta.getDatabaseProductName() + " " + meta.getDatabaseProductVersion());
        System.out.println("schemas\t" + column(meta.getSchemas(), "TABLE_SCHEM"));
        System.out.println("tables\t" + column(meta.getTables(null, null, "%", new String[] {"TABLE"}), "TABLE_NAME"));
        System.out.println("views\t" + column(meta.getTables(null, null, "%", new String[] {"VIEW"}), "TABLE_NAME"));
        System.out.println("columns\t" + column(meta.getColumns(null, null, "customer", "%"), "COLUMN_NAME"));
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(args[3])) {
            List<String> rows = new ArrayList<>();
            int n = rs.getMetaData().getColumnCount();
            while (rs.next()) {
                List<String> row = new ArrayList<>();
                for (int i = 1; i <= n; i++) {
                    row.add(String.valueOf(rs.getString(i)));
                }
                rows.add(String.join("|", row));
            }
            System.out.println("rows\t" + String.join(",", rows));
        } catch (SQLException e) {
            System.out.println("rows\tERROR " + e.getSQLState() + " " + e.getMessage());
        }
        // Twice: pgjdbc turns a statement into a named server-side
        // prepared statement from its fifth run (prepareThreshold), so run
        // it past that and check every answer agrees.
        List<String> answers = new ArrayList<>();
        try (PreparedStatement ps = conn.prepareStatement(args[4])) {
            for (int run = 0; run < 6; run++) {
                ps.setString(1, args[5]);
                try (ResultSet rs = ps.executeQuery()) {
                    answers.add(rs.next() ? rs.getString(1) : "none");
                }
            }
            System.out.println("prepared\t" + String.join(",", answers));
        } catch (SQLException e) {
            System.out.println("prepared\tERROR " + e.getSQLState() + " " + e.getMessage());
        }
        conn.close();
    }

    static String column(ResultSet rs, String name) throws SQLException {
        List<String> out = new ArrayList<>();
        while (rs.next()) {
            out.add(rs.getString(name));
        }
        rs.close();
        return String.join(",", out);
    }
}
