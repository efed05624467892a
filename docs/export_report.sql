-- The service report of GET /v1/reports/service, in SQL over the export tables
-- (docs/EXPORT.md). Parameters, replaced textually: :tz (the [analytics] timezone),
-- :interval ('hour' | 'day' | 'week'), :group_by (channel | queue | segment | branch |
-- agent), :from and :to (the report's "from" and "to", ISO 8601 with offset).
-- One row per period and group: period start (local time), key, then the figures.
SELECT to_char(greatest(date_trunc(:interval, hour_start AT TIME ZONE :tz),
                        :from::timestamptz AT TIME ZONE :tz), 'YYYY-MM-DD HH24:MI:SS') AS period,
       :group_by AS key,
       sum(offered) AS offered,
       sum(answered) AS answered,
       sum(abandoned) AS abandoned,
       sum(answered_in_sla) AS answered_in_sla,
       round(sum(answered_in_sla)::numeric / nullif(sum(answered) + sum(abandoned), 0), 4) AS service_level,
       round(sum(wait_ms)::numeric / nullif(sum(answered), 0) / 1000, 4) AS asa_seconds,
       round((sum(handle_ms) + sum(wrap_ms))::numeric / nullif(sum(handled), 0) / 1000, 4) AS aht_seconds,
       sum(transfers) AS transfers,
       sum(handled) AS handled,
       sum(new_cases) AS new_cases,
       round(sum(offered)::numeric / nullif(sum(new_cases), 0), 4) AS contacts_per_case,
       sum(repeat_cases) AS repeat_cases,
       round((sum(new_cases) - sum(repeat_cases))::numeric / nullif(sum(new_cases), 0), 4) AS fcr_rate
FROM omnicc_facts
WHERE hour_start >= :from::timestamptz AND hour_start < :to::timestamptz
GROUP BY 1, 2
ORDER BY 1, 2;
