//! hindcast's statements: DataFusion's, plus the feature-store DDL.
//!
//! The DDL is parsed by a thin layer over [`DFParser`]: a statement that starts with
//! `CREATE [OR REPLACE] FEATURE`, `DROP FEATURE` or `SHOW FEATURE` is read here with
//! sqlparser's own token helpers (so errors carry sqlparser's line and column), and every
//! other statement goes to DataFusion's parser unchanged.
//!
//! ```sql
//! CREATE [OR REPLACE] FEATURE VIEW [IF NOT EXISTS] name
//!   ENTITY (k, ...) TIMESTAMP col [CREATED col] [TTL INTERVAL '...']
//!   [AGGREGATE (function([DISTINCT] col | *) OVER INTERVAL '...' AS name, ...)]
//!   { STORED AS PARQUET|CSV [PARTITIONED BY (p, ...)] [OPTIONS ('k' 'v', ...)] LOCATION '...'
//!   | AS query }
//! CREATE [OR REPLACE] FEATURE SERVICE [IF NOT EXISTS] name AS view (f, ...) | view (*), ...
//! DROP FEATURE { VIEW | SERVICE } [IF EXISTS] name
//! SHOW FEATURE { VIEWS | SERVICES }
//! ```
//! The clauses between the name and the source may come in any order.

use std::fmt;

use datafusion::common::{DataFusionError, Result, plan_datafusion_err};
use datafusion::sql::parser::{DFParser, DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr as SQLExpr, Ident, ObjectName, Query, Value};
use datafusion::sql::sqlparser::dialect::Dialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::IsOptional::Mandatory;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::asof_on::rewrite_asof_on;

/// One parsed statement.
#[derive(Debug, Clone)]
pub enum HindcastStatement {
    /// Anything DataFusion parses (queries, `CREATE EXTERNAL TABLE`, `COPY`, `EXPLAIN`, ...).
    DataFusion(DFStatement),
    CreateFeatureView(Box<CreateFeatureView>),
    CreateFeatureService(CreateFeatureService),
    DropFeature {
        kind: FeatureObject,
        name: ObjectName,
        if_exists: bool,
    },
    ShowFeatures(FeatureObject),
}

/// What a `DROP FEATURE` or `SHOW FEATURE` statement is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureObject {
    View,
    Service,
}

impl fmt::Display for FeatureObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FeatureObject::View => "feature view",
            FeatureObject::Service => "feature service",
        })
    }
}

/// `CREATE FEATURE VIEW`.
#[derive(Debug, Clone)]
pub struct CreateFeatureView {
    pub name: ObjectName,
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub entities: Vec<Ident>,
    pub timestamp: Ident,
    pub created: Option<Ident>,
    pub ttl: Option<SQLExpr>,
    /// An aggregation view's features; empty for a view whose rows are the features.
    pub aggregates: Vec<AggregateItem>,
    pub source: FeatureViewSource,
}

/// `function([DISTINCT] argument) OVER window AS name` in `AGGREGATE (...)`.
#[derive(Debug, Clone)]
pub struct AggregateItem {
    pub function: Ident,
    pub distinct: bool,
    /// `None` for `*`.
    pub argument: Option<Ident>,
    pub window: SQLExpr,
    pub name: Ident,
}

impl fmt::Display for AggregateItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let distinct = if self.distinct { "DISTINCT " } else { "" };
        let argument = match &self.argument {
            Some(argument) => argument.to_string(),
            None => "*".to_string(),
        };
        write!(
            f,
            "{}({distinct}{argument}) OVER {} AS {}",
            self.function, self.window, self.name
        )
    }
}

/// Where a feature view's rows come from.
#[derive(Debug, Clone)]
pub enum FeatureViewSource {
    Files {
        /// `PARQUET` or `CSV`, upper case.
        format: String,
        location: String,
        partitions: Vec<Ident>,
        options: Vec<(String, String)>,
    },
    Query(Box<Query>),
}

/// The statement as SQL this parser reads back (what a training set's manifest records).
impl fmt::Display for CreateFeatureView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |idents: &[Ident]| {
            idents
                .iter()
                .map(Ident::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(f, "CREATE ")?;
        if self.or_replace {
            write!(f, "OR REPLACE ")?;
        }
        write!(f, "FEATURE VIEW ")?;
        if self.if_not_exists {
            write!(f, "IF NOT EXISTS ")?;
        }
        write!(
            f,
            "{} ENTITY ({}) TIMESTAMP {}",
            self.name,
            list(&self.entities),
            self.timestamp
        )?;
        if let Some(created) = &self.created {
            write!(f, " CREATED {created}")?;
        }
        if let Some(ttl) = &self.ttl {
            write!(f, " TTL {ttl}")?;
        }
        if !self.aggregates.is_empty() {
            let items: Vec<String> = self.aggregates.iter().map(|a| a.to_string()).collect();
            write!(f, " AGGREGATE ({})", items.join(", "))?;
        }
        match &self.source {
            FeatureViewSource::Files {
                format,
                location,
                partitions,
                options,
            } => {
                write!(f, " STORED AS {format}")?;
                if !partitions.is_empty() {
                    write!(f, " PARTITIONED BY ({})", list(partitions))?;
                }
                write!(f, " LOCATION {}", quoted(location))?;
                if !options.is_empty() {
                    let pairs: Vec<String> = options
                        .iter()
                        .map(|(k, v)| format!("{} {}", quoted(k), quoted(v)))
                        .collect();
                    write!(f, " OPTIONS ({})", pairs.join(", "))?;
                }
                Ok(())
            }
            FeatureViewSource::Query(query) => write!(f, " AS {query}"),
        }
    }
}

/// `s` as a single-quoted SQL string.
pub fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `CREATE FEATURE SERVICE name AS view (f1, f2), view2 (*)`.
#[derive(Debug, Clone)]
pub struct CreateFeatureService {
    pub name: ObjectName,
    pub or_replace: bool,
    pub if_not_exists: bool,
    /// Each view with the features taken from it; `None` for `(*)`.
    pub views: Vec<(ObjectName, Option<Vec<Ident>>)>,
}

/// The tokens of `sql` as hindcast's parsers read them: with DuckDB's ASOF joins marked
/// ([`rewrite_asof_on`]).
fn tokens(sql: &str, dialect: &dyn Dialect) -> Result<Vec<TokenWithSpan>> {
    let tokens = Tokenizer::new(dialect, sql)
        .tokenize_with_location()
        .map_err(ParserError::from)?;
    rewrite_asof_on(tokens)
}

/// One query (a `historical_features` spine), read as [`parse_statements`] reads queries.
pub(crate) fn parse_query(sql: &str, dialect: &dyn Dialect) -> Result<Box<Query>> {
    let mut parser = Parser::new(dialect).with_tokens_with_locations(tokens(sql, dialect)?);
    Ok(parser.parse_query()?)
}

/// Parse `;`-separated statements, each with the line it starts on (1-based).
pub fn parse_statements(
    sql: &str,
    dialect: &dyn Dialect,
    recursion_limit: usize,
) -> Result<Vec<(HindcastStatement, u64)>> {
    let mut parser = DFParserBuilder::new(tokens(sql, dialect)?)
        .with_dialect(dialect)
        .with_recursion_limit(recursion_limit)
        .build()?;
    let mut statements = vec![];
    loop {
        while parser.parser.consume_token(&Token::SemiColon) {}
        let next = parser.parser.peek_token();
        if next.token == Token::EOF {
            break;
        }
        let line = next.span.start.line;
        statements.push((parse_statement(&mut parser)?, line));
        let after = parser.parser.peek_token();
        if after.token != Token::SemiColon && after.token != Token::EOF {
            return Err(expected("end of statement", after));
        }
    }
    Ok(statements)
}

fn parse_statement(parser: &mut DFParser) -> Result<HindcastStatement> {
    let p = &mut parser.parser;
    let words = p.peek_tokens::<4>().map(|t| match t {
        Token::Word(w) if w.quote_style.is_none() => w.value.to_uppercase(),
        _ => String::new(),
    });
    let ours = matches!(
        words.each_ref().map(String::as_str),
        ["CREATE", "FEATURE", ..]
            | ["CREATE", "OR", "REPLACE", "FEATURE"]
            | ["DROP" | "SHOW", "FEATURE", ..]
    );
    if !ours {
        return Ok(HindcastStatement::DataFusion(parser.parse_statement()?));
    }
    if p.parse_keyword(Keyword::CREATE) {
        let or_replace = p.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
        p.next_token(); // FEATURE
        if p.parse_keyword(Keyword::VIEW) {
            parse_create_view(parser, or_replace)
                .map(|v| HindcastStatement::CreateFeatureView(Box::new(v)))
        } else if p.parse_keyword(Keyword::SERVICE) {
            parse_create_service(parser, or_replace).map(HindcastStatement::CreateFeatureService)
        } else {
            Err(expected(
                "VIEW or SERVICE after CREATE FEATURE",
                p.peek_token(),
            ))
        }
    } else if p.parse_keyword(Keyword::DROP) {
        p.next_token(); // FEATURE
        let kind = parse_feature_object(p, false)?;
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = p.parse_object_name(false)?;
        Ok(HindcastStatement::DropFeature {
            kind,
            name,
            if_exists,
        })
    } else {
        p.next_token(); // SHOW
        p.next_token(); // FEATURE
        Ok(HindcastStatement::ShowFeatures(parse_feature_object(
            p, true,
        )?))
    }
}

fn parse_feature_object(p: &mut Parser, plural: bool) -> Result<FeatureObject> {
    let (view, service) = if plural {
        ("VIEWS", "SERVICES")
    } else {
        ("VIEW", "SERVICE")
    };
    if parse_word(p, view) {
        Ok(FeatureObject::View)
    } else if parse_word(p, service) {
        Ok(FeatureObject::Service)
    } else {
        Err(expected(&format!("{view} or {service}"), p.peek_token()))
    }
}

fn parse_create_view(parser: &mut DFParser, or_replace: bool) -> Result<CreateFeatureView> {
    let p = &mut parser.parser;
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = p.parse_object_name(false)?;

    let mut entities = None;
    let mut timestamp = None;
    let mut created = None;
    let mut ttl = None;
    let mut aggregates = None;
    let mut format = None;
    let mut partitions = None;
    let mut options = None;
    let mut location = None;
    let mut query = None;
    loop {
        let p = &mut parser.parser;
        let clause = p.peek_token();
        if parse_word(p, "ENTITY") {
            let keys = p.parse_parenthesized_column_list(Mandatory, false)?;
            set_once(&mut entities, keys, "ENTITY", &clause)?;
        } else if p.parse_keyword(Keyword::TIMESTAMP) {
            let column = p.parse_identifier()?;
            set_once(&mut timestamp, column, "TIMESTAMP", &clause)?;
        } else if parse_word(p, "CREATED") {
            let column = p.parse_identifier()?;
            set_once(&mut created, column, "CREATED", &clause)?;
        } else if parse_word(p, "TTL") {
            let value = p.parse_expr()?;
            set_once(&mut ttl, value, "TTL", &clause)?;
        } else if parse_word(p, "AGGREGATE") {
            let items = parse_aggregates(p)?;
            set_once(&mut aggregates, items, "AGGREGATE", &clause)?;
        } else if p.parse_keywords(&[Keyword::STORED, Keyword::AS]) {
            let value = p.parse_identifier()?.value.to_uppercase();
            set_once(&mut format, value, "STORED AS", &clause)?;
        } else if p.parse_keywords(&[Keyword::PARTITIONED, Keyword::BY]) {
            let columns = p.parse_parenthesized_column_list(Mandatory, false)?;
            set_once(&mut partitions, columns, "PARTITIONED BY", &clause)?;
        } else if p.parse_keyword(Keyword::LOCATION) {
            let value = p.parse_literal_string()?;
            set_once(&mut location, value, "LOCATION", &clause)?;
        } else if p.parse_keyword(Keyword::OPTIONS) {
            let pairs = parse_options(parser)?;
            set_once(&mut options, pairs, "OPTIONS", &clause)?;
        } else if p.parse_keyword(Keyword::AS) {
            query = Some(p.parse_query()?);
            break;
        } else {
            break;
        }
    }

    let p = &parser.parser;
    let Some(entities) = entities else {
        return Err(plan_datafusion_err!(
            "CREATE FEATURE VIEW {name} needs ENTITY (key, ...): the columns that identify what the features describe"
        ));
    };
    let Some(timestamp) = timestamp else {
        return Err(plan_datafusion_err!(
            "CREATE FEATURE VIEW {name} needs TIMESTAMP <column>: the event time of each feature row"
        ));
    };
    let source = match (query, format, location) {
        (Some(query), None, None) if partitions.is_none() && options.is_none() => {
            FeatureViewSource::Query(query)
        }
        (Some(_), ..) => {
            return Err(plan_datafusion_err!(
                "CREATE FEATURE VIEW {name} takes either AS <query> or STORED AS ... LOCATION '...', not both"
            ));
        }
        (None, Some(format), Some(location)) => FeatureViewSource::Files {
            format,
            location,
            partitions: partitions.unwrap_or_default(),
            options: options.unwrap_or_default(),
        },
        (None, None, Some(_)) => {
            return Err(plan_datafusion_err!(
                "CREATE FEATURE VIEW {name} needs STORED AS PARQUET or STORED AS CSV before its LOCATION"
            ));
        }
        (None, _, None) => {
            let found = p.peek_token();
            return Err(match found.token {
                Token::EOF | Token::SemiColon => plan_datafusion_err!(
                    "CREATE FEATURE VIEW {name} needs a source: STORED AS PARQUET LOCATION '...' or AS SELECT ..."
                ),
                _ => expected(
                    "ENTITY, TIMESTAMP, CREATED, TTL, AGGREGATE, STORED AS, PARTITIONED BY, OPTIONS, LOCATION or AS",
                    found,
                ),
            });
        }
    };
    Ok(CreateFeatureView {
        name,
        or_replace,
        if_not_exists,
        entities,
        timestamp,
        created,
        ttl,
        aggregates: aggregates.unwrap_or_default(),
        source,
    })
}

/// `(function([DISTINCT] col | *) OVER <interval> AS name, ...)`.
fn parse_aggregates(p: &mut Parser) -> Result<Vec<AggregateItem>> {
    p.expect_token(&Token::LParen)?;
    let items = p.parse_comma_separated(|p| {
        let function = p.parse_identifier()?;
        p.expect_token(&Token::LParen)?;
        let distinct = p.parse_keyword(Keyword::DISTINCT);
        let argument = match p.consume_token(&Token::Mul) {
            true => None,
            false => Some(p.parse_identifier()?),
        };
        if !p.consume_token(&Token::RParen) {
            return Err(ParserError::ParserError(format!(
                "Expected: ) after the argument of {function}, found: {}{}: an aggregate takes one column (compute expressions in an AS SELECT view)",
                p.peek_token(),
                p.peek_token().span.start
            )));
        }
        if !p.parse_keyword(Keyword::OVER) {
            return Err(ParserError::ParserError(format!(
                "Expected: OVER INTERVAL '...' after {function}(...), found: {}{}: each aggregate names its window, e.g. count(*) OVER INTERVAL '30 days' AS n_30d",
                p.peek_token(),
                p.peek_token().span.start
            )));
        }
        let window = p.parse_expr()?;
        if !p.parse_keyword(Keyword::AS) {
            return Err(ParserError::ParserError(format!(
                "Expected: AS <name> after the window of {function}(...), found: {}{}",
                p.peek_token(),
                p.peek_token().span.start
            )));
        }
        let name = p.parse_identifier()?;
        Ok(AggregateItem {
            function,
            distinct,
            argument,
            window,
            name,
        })
    })?;
    p.expect_token(&Token::RParen)?;
    Ok(items)
}

/// `('key' 'value', ...)`, as in DataFusion's `CREATE EXTERNAL TABLE ... OPTIONS`.
fn parse_options(parser: &mut DFParser) -> Result<Vec<(String, String)>> {
    parser
        .parser
        .expect_token(&Token::LParen)
        .map_err(DataFusionError::from)?;
    let mut options = vec![];
    loop {
        let key = parser.parse_option_key()?;
        let value = match parser.parse_option_value()? {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s,
            Value::Number(n, _) => n,
            Value::Boolean(b) => b.to_string(),
            other => other.to_string(),
        };
        options.push((key, value));
        if !parser.parser.consume_token(&Token::Comma) {
            break;
        }
    }
    parser
        .parser
        .expect_token(&Token::RParen)
        .map_err(DataFusionError::from)?;
    Ok(options)
}

fn parse_create_service(parser: &mut DFParser, or_replace: bool) -> Result<CreateFeatureService> {
    let p = &mut parser.parser;
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = p.parse_object_name(false)?;
    p.expect_keyword(Keyword::AS)?;
    let views = p.parse_comma_separated(|p| {
        let view = p.parse_object_name(false)?;
        p.expect_token(&Token::LParen)?;
        let features = if p.consume_token(&Token::Mul) {
            None
        } else {
            Some(p.parse_comma_separated(|p| p.parse_identifier())?)
        };
        p.expect_token(&Token::RParen)?;
        Ok((view, features))
    })?;
    Ok(CreateFeatureService {
        name,
        or_replace,
        if_not_exists,
        views,
    })
}

/// Consume the next token if it is the (non-reserved) word `word`, in any case.
fn parse_word(p: &mut Parser, word: &str) -> bool {
    if let Token::Word(w) = p.peek_token().token
        && w.quote_style.is_none()
        && w.value.eq_ignore_ascii_case(word)
    {
        p.next_token();
        return true;
    }
    false
}

fn set_once<T>(slot: &mut Option<T>, value: T, clause: &str, at: &TokenWithSpan) -> Result<()> {
    if slot.is_some() {
        return Err(plan_datafusion_err!(
            "{clause} appears twice in CREATE FEATURE VIEW (second at {})",
            at.span.start
        ));
    }
    *slot = Some(value);
    Ok(())
}

fn expected(what: &str, found: TokenWithSpan) -> DataFusionError {
    DataFusionError::SQL(
        Box::new(ParserError::ParserError(format!(
            "Expected: {what}, found: {found}{}",
            found.span.start
        ))),
        None,
    )
}
